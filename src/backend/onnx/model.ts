// A minimal ONNX ModelProto builder: graphs of standard-domain nodes with typed inputs,
// outputs, constant initializers and int/float/ints/floats/tensor attributes, serialized
// with the field numbers of onnx/onnx.proto.

import { ProtoWriter } from "./protobuf.js";

/** ONNX IR version 8 goes with opset 17 (ONNX 1.12); both onnxruntime-node and -web load it. */
export const IR_VERSION = 8;
export const OPSET = 17;

/** TensorProto.DataType values for the element types the graphs use. */
const DATA_TYPE = { float: 1, int64: 7 } as const;
export type ElemType = keyof typeof DATA_TYPE;

/** AttributeProto.AttributeType values. */
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_TENSOR = 4;
const ATTR_FLOATS = 6;
const ATTR_INTS = 7;

/** Field numbers from onnx.proto, grouped by message. */
const F = {
  model: { irVersion: 1, producerName: 2, producerVersion: 3, graph: 7, opsetImport: 8 },
  opset: { domain: 1, version: 2 },
  graph: { node: 1, name: 2, initializer: 5, input: 11, output: 12 },
  node: { input: 1, output: 2, name: 3, opType: 4, attribute: 5, domain: 7 },
  attribute: { name: 1, f: 2, i: 3, t: 5, floats: 7, ints: 8, type: 20 },
  valueInfo: { name: 1, type: 2 },
  typeProto: { tensorType: 1 },
  tensorType: { elemType: 1, shape: 2 },
  shape: { dim: 1 },
  dimension: { dimValue: 1, dimParam: 2 },
  tensor: { dims: 1, dataType: 2, name: 8, rawData: 9 },
} as const;

/** A graph input or output: fixed dims are numbers, symbolic dims are names. */
export interface ValueInfo {
  name: string;
  type: ElemType;
  dims: readonly (number | string)[];
}

/** A constant tensor (initializer or tensor attribute), stored as little-endian raw_data. */
export interface TensorValue {
  name: string;
  dims: readonly number[];
  data: Float32Array | BigInt64Array;
}

export type Attribute =
  | { name: string; type: "int"; value: number }
  | { name: string; type: "float"; value: number }
  | { name: string; type: "ints"; value: readonly number[] }
  | { name: string; type: "floats"; value: readonly number[] }
  | { name: string; type: "tensor"; value: TensorValue };

export interface NodeSpec {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name: string;
  attributes: readonly Attribute[];
}

export interface GraphSpec {
  name: string;
  nodes: readonly NodeSpec[];
  inputs: readonly ValueInfo[];
  outputs: readonly ValueInfo[];
  initializers: readonly TensorValue[];
}

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

function writeTensor(w: ProtoWriter, t: TensorValue): void {
  // TensorProto.dims is a plain (unpacked) repeated int64 in onnx.proto.
  for (const d of t.dims) w.varint(F.tensor.dims, d);
  w.varint(F.tensor.dataType, t.data instanceof Float32Array ? DATA_TYPE.float : DATA_TYPE.int64);
  w.string(F.tensor.name, t.name);
  if (!LITTLE_ENDIAN) throw new Error("ONNX raw_data is little-endian; this platform is big-endian");
  w.bytes(F.tensor.rawData, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

function writeValueInfo(w: ProtoWriter, v: ValueInfo): void {
  w.string(F.valueInfo.name, v.name);
  w.message(F.valueInfo.type, (type) =>
    type.message(F.typeProto.tensorType, (tensor) => {
      tensor.varint(F.tensorType.elemType, DATA_TYPE[v.type]);
      tensor.message(F.tensorType.shape, (shape) => {
        for (const d of v.dims) {
          shape.message(F.shape.dim, (dim) => {
            if (typeof d === "number") dim.varint(F.dimension.dimValue, d);
            else dim.string(F.dimension.dimParam, d);
          });
        }
      });
    }));
}

function writeAttribute(w: ProtoWriter, a: Attribute): void {
  w.string(F.attribute.name, a.name);
  switch (a.type) {
    case "int":
      w.varint(F.attribute.type, ATTR_INT);
      w.varint(F.attribute.i, a.value);
      break;
    case "float":
      w.varint(F.attribute.type, ATTR_FLOAT);
      w.float(F.attribute.f, a.value);
      break;
    case "ints":
      w.varint(F.attribute.type, ATTR_INTS);
      for (const v of a.value) w.varint(F.attribute.ints, v);
      break;
    case "floats":
      w.varint(F.attribute.type, ATTR_FLOATS);
      for (const v of a.value) w.float(F.attribute.floats, v);
      break;
    case "tensor":
      w.varint(F.attribute.type, ATTR_TENSOR);
      w.message(F.attribute.t, (t) => writeTensor(t, a.value));
      break;
  }
}

function writeNode(w: ProtoWriter, n: NodeSpec): void {
  for (const i of n.inputs) w.string(F.node.input, i);
  for (const o of n.outputs) w.string(F.node.output, o);
  w.string(F.node.name, n.name);
  w.string(F.node.opType, n.opType);
  for (const a of n.attributes) w.message(F.node.attribute, (aw) => writeAttribute(aw, a));
}

/** Serializes a graph as a complete ModelProto importing the default ONNX domain. */
export function encodeModel(graph: GraphSpec, producer = "shortgpt"): Uint8Array {
  const w = new ProtoWriter();
  w.varint(F.model.irVersion, IR_VERSION);
  w.string(F.model.producerName, producer);
  w.message(F.model.opsetImport, (o) => {
    o.string(F.opset.domain, "");
    o.varint(F.opset.version, OPSET);
  });
  w.message(F.model.graph, (g) => {
    for (const n of graph.nodes) g.message(F.graph.node, (nw) => writeNode(nw, n));
    g.string(F.graph.name, graph.name);
    for (const t of graph.initializers) g.message(F.graph.initializer, (tw) => writeTensor(tw, t));
    for (const i of graph.inputs) g.message(F.graph.input, (iw) => writeValueInfo(iw, i));
    for (const o of graph.outputs) g.message(F.graph.output, (ow) => writeValueInfo(ow, o));
  });
  return w.finish();
}

/**
 * Builds a GraphSpec node by node: `op` returns the (generated, unique) output name so
 * graphs read like expressions, and constants become named initializers.
 */
export class GraphBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly inputs: ValueInfo[] = [];
  private readonly outputs: ValueInfo[] = [];
  private readonly initializers: TensorValue[] = [];
  private counter = 0;

  constructor(readonly name: string) {}

  private fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  input(name: string, type: ElemType, dims: readonly (number | string)[]): string {
    this.inputs.push({ name, type, dims });
    return name;
  }

  /** Marks `value` as a graph output named `name` (through Identity when the names differ). */
  output(value: string, name: string, type: ElemType, dims: readonly (number | string)[]): void {
    if (value !== name) this.nodes.push({ opType: "Identity", inputs: [value], outputs: [name], name: this.fresh("Identity"), attributes: [] });
    this.outputs.push({ name, type, dims });
  }

  /** One node with a single output; returns the output's name. */
  op(opType: string, inputs: readonly string[], attributes: readonly Attribute[] = []): string {
    const out = this.fresh(opType.toLowerCase());
    this.nodes.push({ opType, inputs, outputs: [out], name: this.fresh(opType), attributes });
    return out;
  }

  /** A float32 constant of the given shape. */
  constFloat(data: Float32Array | readonly number[], dims: readonly number[]): string {
    const name = this.fresh("const_f");
    this.initializers.push({ name, dims, data: data instanceof Float32Array ? data : Float32Array.from(data) });
    return name;
  }

  /** A 1-D int64 constant (shapes, axes, slice bounds). */
  constInt64(values: readonly number[]): string {
    const name = this.fresh("const_i");
    this.initializers.push({ name, dims: [values.length], data: BigInt64Array.from(values.map((v) => BigInt(v))) });
    return name;
  }

  build(): GraphSpec {
    return { name: this.name, nodes: this.nodes, inputs: this.inputs, outputs: this.outputs, initializers: this.initializers };
  }
}

/** Attribute shorthands. */
export const attr = {
  int: (name: string, value: number): Attribute => ({ name, type: "int", value }),
  float: (name: string, value: number): Attribute => ({ name, type: "float", value }),
  ints: (name: string, value: readonly number[]): Attribute => ({ name, type: "ints", value }),
};

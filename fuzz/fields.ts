// Where the fields of each seed file lie, found by small walkers independent of the readers
// under test, so mutations can aim at counts, lengths, types and offsets instead of random bytes.

/** One fixed-width integer or float field of a binary file. */
export interface Field {
  name: string;
  offset: number;
  /** Width in bytes: 4 or 8. */
  width: 4 | 8;
  kind: "int" | "float";
}

/** A region that holds a value that can be replaced whole (a GGUF metadata value). */
export interface ValueRegion {
  name: string;
  /** Offset of the u32 type tag, then the value up to `end`. */
  typeOffset: number;
  end: number;
}

export interface BinaryLayout {
  fields: Field[];
  /** Offsets where a structure begins or ends: where truncations cut. */
  boundaries: number[];
  values: ValueRegion[];
}

const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** The fields of a GGUF file: header counts, every key, type, length and count, every tensor-info field. */
export function ggufLayout(buf: Buffer): BinaryLayout {
  const fields: Field[] = [
    { name: "version", offset: 4, width: 4, kind: "int" },
    { name: "tensor count", offset: 8, width: 8, kind: "int" },
    { name: "metadata count", offset: 16, width: 8, kind: "int" },
  ];
  const boundaries = [0, 4, 8, 16, 24];
  const values: ValueRegion[] = [];
  let pos = 24;
  const u64 = (name: string): number => {
    fields.push({ name, offset: pos, width: 8, kind: "int" });
    const v = Number(buf.readBigUInt64LE(pos));
    pos += 8;
    return v;
  };
  const u32 = (name: string): number => {
    fields.push({ name, offset: pos, width: 4, kind: "int" });
    const v = buf.readUInt32LE(pos);
    pos += 4;
    return v;
  };
  const string = (name: string): string => {
    const n = u64(`${name} length`);
    const s = buf.toString("utf8", pos, pos + n);
    pos += n;
    return s;
  };
  const value = (type: number, name: string): void => {
    if (type === 8) {
      string(name);
    } else if (type === 9) {
      const itemType = u32(`${name} item type`);
      const count = u64(`${name} count`);
      for (let i = 0; i < count; i++) {
        // Only the first items of long arrays become fields, to keep the list small.
        if (i < 4 || itemType === 9) value(itemType, `${name}[${i}]`);
        else pos += itemType === 8 ? 8 + Number(buf.readBigUInt64LE(pos)) : SCALAR_BYTES[itemType]!;
      }
    } else {
      const width = SCALAR_BYTES[type]!;
      if (width >= 4) fields.push({ name, offset: pos, width: width as 4 | 8, kind: type === 6 || type === 12 ? "float" : "int" });
      pos += width;
    }
  };
  const tensorCount = Number(buf.readBigUInt64LE(8));
  const kvCount = Number(buf.readBigUInt64LE(16));
  for (let i = 0; i < kvCount; i++) {
    const key = string(`key #${i}`);
    const typeOffset = pos;
    const type = u32(`type of ${key}`);
    value(type, key);
    values.push({ name: key, typeOffset, end: pos });
    boundaries.push(pos);
  }
  for (let i = 0; i < tensorCount; i++) {
    const name = string(`tensor #${i} name`);
    const nDims = u32(`${name} dims`);
    for (let d = 0; d < nDims; d++) u64(`${name} dim ${d}`);
    u32(`${name} type`);
    u64(`${name} offset`);
    boundaries.push(pos);
  }
  return { fields, boundaries, values };
}

/** The llama2.c legacy header's seven int32 fields, and the tensor boundaries after it. */
export function llama2cLayout(buf: Buffer, tensorEnds: readonly number[]): BinaryLayout {
  const names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
  return {
    fields: names.map((name, i) => ({ name, offset: 4 * i, width: 4, kind: "int" })),
    boundaries: [0, 4, 28, ...tensorEnds.filter((e) => e <= buf.length)],
    values: [],
  };
}

/** llama2.c tokenizer.bin: max token length, then per token a float32 score and an int32 length. */
export function tokenizerBinLayout(buf: Buffer): BinaryLayout {
  const fields: Field[] = [{ name: "max token length", offset: 0, width: 4, kind: "int" }];
  const boundaries = [0, 4];
  let pos = 4;
  for (let id = 0; pos + 8 <= buf.length; id++) {
    fields.push({ name: `score of token ${id}`, offset: pos, width: 4, kind: "float" });
    fields.push({ name: `length of token ${id}`, offset: pos + 4, width: 4, kind: "int" });
    pos += 8 + buf.readInt32LE(pos + 4);
    boundaries.push(pos);
  }
  return { fields, boundaries, values: [] };
}

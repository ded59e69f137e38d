// The oneDNN option of issue #18, measured: Debian's libdnnl (the library PyTorch's CPU bf16
// GEMMs come from) running the engine's GEMM shapes as a bf16 x bf16 -> f32 matmul primitive,
// weights reordered once into the layout oneDNN chooses (as shortgpt packs them once per layer).
// Prints one JSON line: GFLOP/s per shape, and the ISA oneDNN dispatched to.
//   g++ -O2 -std=c++17 bench/onednn/onednnGemm.cpp -ldnnl -o build/onednn-gemm
//   OMP_NUM_THREADS=2 build/onednn-gemm            (bench/cpuGemm.ts runs it when libdnnl is there)
#include <oneapi/dnnl/dnnl.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

using namespace dnnl;

struct Shape { const char *name; memory::dim m, n, k; };

static double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main() {
  const Shape shapes[] = {
      {"TinyLlama qkv", 1024, 2560, 2048}, {"TinyLlama o", 1024, 2048, 2048}, {"TinyLlama gate+up", 1024, 11264, 2048},
      {"TinyLlama down", 1024, 2048, 5632}, {"Llama-2-7B qkv", 1024, 12288, 4096}, {"Llama-2-7B gate+up", 1024, 22016, 4096},
      {"Llama-2-7B down", 1024, 4096, 11008},
  };
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  std::string out = "{\"library\":\"oneDNN " + std::to_string(dnnl_version()->major) + "." + std::to_string(dnnl_version()->minor) + "." +
                    std::to_string(dnnl_version()->patch) + "\",\"rows\":[";
  bool first = true;
  for (const Shape &s : shapes) {
    memory::desc a_md({s.m, s.k}, memory::data_type::bf16, memory::format_tag::ab);
    memory::desc w_any({s.k, s.n}, memory::data_type::bf16, memory::format_tag::any);
    memory::desc w_plain({s.k, s.n}, memory::data_type::bf16, memory::format_tag::ba);  // (n, k) row-major = W^T
    memory::desc c_md({s.m, s.n}, memory::data_type::f32, memory::format_tag::ab);
    matmul::primitive_desc pd(matmul::desc(a_md, w_any, c_md), eng);  // the oneDNN 2.x API (Debian 12)
    memory a(a_md, eng), w0(w_plain, eng), w(pd.weights_desc(), eng), c(c_md, eng);
    // Small bf16 numbers (0x3c00.. ~ 0.0078). On AMX the values change the speed: this fill ran
    // ~2x faster than random values on the gate+up shape (2026-12-05), so compare on the same data.
    auto fill = [](memory &mem, size_t n) { auto *p = static_cast<uint16_t *>(mem.get_data_handle()); for (size_t i = 0; i < n; i++) p[i] = 0x3c00 + (i % 97); };
    fill(a, s.m * s.k);
    fill(w0, s.n * s.k);
    reorder(w0, w).execute(strm, w0, w);
    matmul prim(pd);
    std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, c}};
    prim.execute(strm, args);  // warm-up
    strm.wait();
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
      double t = seconds_now();
      prim.execute(strm, args);
      strm.wait();
      best = std::min(best, seconds_now() - t);
    }
    double gflops = 2.0 * s.m * s.n * s.k / best / 1e9;
    char row[256];
    std::snprintf(row, sizeof row, "%s{\"gemm\":\"%s\",\"m\":%ld,\"n\":%ld,\"k\":%ld,\"gflops\":%.1f,\"impl\":\"%s\"}", first ? "" : ",", s.name, (long)s.m, (long)s.n, (long)s.k, gflops, pd.impl_info_str());
    out += row;
    first = false;
  }
  out += "]}";
  std::puts(out.c_str());
  return 0;
}

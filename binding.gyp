{
  "variables": {
    "kvp_cflags": ["-O3", "-fPIC", "-ffp-contract=fast", "-fno-math-errno", "-Wno-psabi"]
  },
  "targets": [
    {
      "target_name": "kvpress_native",
      "sources": ["native/addon.cc", "native/k_base.c", "native/kv_attn.c", "native/kv_encode.c", "native/press_attn.c", "native/quant.c", "native/press_kernels.c", "native/press_linalg.c"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "KV_ISA=base"],
      "cflags": ["<@(kvp_cflags)", "-fopenmp"],
      "cflags_cc": ["-std=c++17"],
      "ldflags": ["-fopenmp"],
      "conditions": [
        ["target_arch=='x64'", { "dependencies": ["kvp_avx2", "kvp_avx512", "kvp_avx512bf16", "kvp_avx512vnni"] }]
      ]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "kvp_avx2",
          "type": "static_library",
          "sources": ["native/k_avx2.c", "native/kv_attn.c", "native/press_attn.c", "native/quant.c", "native/press_kernels.c"],
          "defines": ["KV_ISA=avx2"],
          "cflags": ["<@(kvp_cflags)", "-mavx2", "-mfma", "-mf16c"]
        },
        {
          "target_name": "kvp_avx512",
          "type": "static_library",
          "sources": ["native/k_avx512.c", "native/kv_attn.c", "native/press_attn.c", "native/quant.c", "native/press_kernels.c"],
          "defines": ["KV_ISA=avx512"],
          "cflags": ["<@(kvp_cflags)", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"]
        },
        {
          "target_name": "kvp_avx512vnni",
          "type": "static_library",
          "sources": ["native/quant.c"],
          "defines": ["KV_ISA=avx512vnni", "QUANT_VNNI=512"],
          "cflags": ["<@(kvp_cflags)", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"]
        },
        {
          "target_name": "kvp_avx512bf16",
          "type": "static_library",
          "sources": ["native/k_avx512bf16.c"],
          "cflags": ["<@(kvp_cflags)", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512bf16", "-mavx2", "-mfma"]
        }
      ]
    }]
  ]
}

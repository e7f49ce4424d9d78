#!/usr/bin/env bash
# Test-only: runs the native tests on the AVX-512 and AVX512-BF16 kernels of a CPU that has
# neither, by compiling those kernels against SIMDe's portable intrinsics (Debian: apt-get
# install libsimde-dev) and making the addon's CPU check report AVX-512. Builds in
# build/avx512-emu/ and runs the compiled tests (dist/, `npm run build` first) from a copy of the
# package there, so build/Release is left alone; then the GEMM stress of
# scripts/avx512-emu/stress.mjs (KVPRESS_EMU_STRESS= skips it). Not part of `npm test`. See
# native/README.md.
#   scripts/check-avx512-emulated.sh [test files under dist/test/ ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
emu=$root/build/avx512-emu
tests=("$@")
if [ ${#tests[@]} = 0 ]; then
  # Every test that runs native kernels (kv-cache: the paged attention of native/kv_attn.c).
  for t in backend backend-isa backend-choice bf16 bf16-accuracy ea-native press-kernels kv-cache quant-native; do
    [ -f "$root/dist/test/$t.test.js" ] && tests+=("$t.test.js")
  done
fi

[ -f /usr/include/simde/x86/avx512.h ] || { echo "SIMDe headers not found: apt-get install libsimde-dev" >&2; exit 1; }
[ -d "$root/dist/test" ] || { echo "no dist/test: run npm run build first" >&2; exit 1; }

# The addon, from a binding.gyp rewritten for emulation (scripts/avx512-emu/make-gyp.py).
rm -rf "$emu"
python3 "$root/scripts/avx512-emu/make-gyp.py" "$root" "$emu/gyp" | sed 's/^/emulated: /'
gyp=${npm_config_node_gyp:-$(dirname "$(command -v node)")/../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js}
prefix=$(cd "$(dirname "$(command -v node)")/.." && pwd)
nodedir=()
[ -f "$prefix/include/node/node_api.h" ] && nodedir=(--nodedir="$prefix")
(cd "$emu/gyp" && node "$gyp" rebuild "${nodedir[@]}" >build.log 2>&1) || { tail -40 "$emu/gyp/build.log" >&2; exit 1; }

# A copy of the package whose build/Release holds the emulation build: the loader takes the
# addon from the package root, which is found above the running module.
pkg=$emu/pkg
mkdir -p "$pkg/build/Release"
cp "$root/package.json" "$pkg/"
cp -r "$root/dist" "$pkg/dist"
for f in "$root"/* "$root"/.ci; do
  case ${f##*/} in dist | build | prebuilds | package.json) ;; *) [ -e "$f" ] && ln -s "$f" "$pkg/${f##*/}" ;; esac
done
cp "$emu/gyp/build/Release/kvpress_native.node" "$pkg/build/Release/"
cp "$root/scripts/avx512-emu/stress.mjs" "$pkg/"
# Proof that nothing runs natively: the emulation build holds no AVX-512 instruction.
if command -v objdump >/dev/null; then
  n=$(objdump -d "$pkg/build/Release/kvpress_native.node" | grep -cE 'zmm|%k[0-7]|vdpbf16' || true)
  [ "$n" = 0 ] || { echo "the emulation build holds $n AVX-512 instructions" >&2; exit 1; }
fi

echo "tests: ${tests[*]}"
status=0
for isa in avx512 avx512bf16; do
  want="avx512 16 $isa"
  got=$(cd "$pkg" && KVPRESS_EMU_ISA=$isa node -e "
    const a = require('./build/Release/kvpress_native.node').info();
    console.log(a.isa, a.vectorFloats, a.gemmBf16.split(' ')[0]);")
  if [ "$got" != "$want" ]; then
    echo "KVPRESS_EMU_ISA=$isa: the addon selected '$got', not '$want'" >&2
    exit 1
  fi
  echo "== KVPRESS_EMU_ISA=$isa: kernels $got (emulated)"
  files=()
  for t in "${tests[@]}"; do files+=("$pkg/dist/test/$t"); done
  if (cd "$pkg" && KVPRESS_EMU_ISA=$isa KVPRESS_BACKEND= node --test --test-concurrency=1 --test-reporter=dot "${files[@]}"); then
    echo "== KVPRESS_EMU_ISA=$isa: pass"
  else
    echo "== KVPRESS_EMU_ISA=$isa: FAIL"
    status=1
  fi
  if [ -n "${KVPRESS_EMU_STRESS-1}" ]; then
    (cd "$pkg" && KVPRESS_EMU_ISA=$isa node stress.mjs) || status=1
  fi
done
exit $status

"""Test-only: writes the emulation build's binding.gyp (scripts/check-avx512-emulated.sh).

Reads the project's binding.gyp and rewrites it for a build directory of its own: every target
compiled with -mavx512* flags loses them and gets SIMDe force-included instead (simde-avx512.h),
so any AVX-512 source the real build has is covered; addon.cc gets force-cpu.h, which makes the
CPU check report AVX-512. Source paths become relative to OUT_DIR. Usage: make-gyp.py ROOT OUT_DIR
"""
import ast
import json
import os
import sys

root, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(root, 'binding.gyp')) as f:
    gyp = ast.literal_eval(f.read())
variables = gyp.get('variables', {})


def expand(flags):
    res = []
    for flag in flags:
        if flag.startswith('<@(') and flag.endswith(')'):
            res.extend(expand(variables[flag[3:-1]]))
        else:
            res.append(flag)
    return res


def targets(node):
    for t in node.get('targets', []):
        yield t
    for cond in node.get('conditions', []):
        for branch in cond[1:]:
            if isinstance(branch, dict):
                yield from targets(branch)


emulated = []
for t in targets(gyp):
    t['sources'] = [os.path.relpath(os.path.join(root, s), out) for s in t.get('sources', [])]
    flags = expand(t.get('cflags', []))
    if any(f.startswith('-mavx512') for f in flags):
        t['cflags'] = [f for f in flags if not f.startswith('-mavx512')] + ['-include', os.path.join(here, 'simde-avx512.h')]
        emulated.append(t['target_name'])
    if any(s.endswith('addon.cc') for s in t['sources']):
        t['cflags_cc'] = t.get('cflags_cc', []) + ['-include', os.path.join(here, 'force-cpu.h')]
if not emulated:
    sys.exit('make-gyp.py: no target of binding.gyp is compiled with -mavx512*')
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, 'binding.gyp'), 'w') as f:
    json.dump(gyp, f, indent=1)
for name in emulated:
    t = next(t for t in targets(gyp) if t['target_name'] == name)
    print(f"{name}: {' '.join(os.path.relpath(os.path.join(out, s), root) for s in t['sources'])}")

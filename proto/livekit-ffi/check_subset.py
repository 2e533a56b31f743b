#!/usr/bin/env python3
"""Check the subset in this directory against the descriptors the livekit wheel embeds.

Usage (needs `pip install protobuf`):
  unzip -q livekit-1.2.0-py3-none-manylinux_2_28_x86_64.whl -d /tmp/lk
  cargo check -p voice-livekit   # the build script writes livekit_ffi_subset.fds to OUT_DIR
  python3 proto/livekit-ffi/check_subset.py /tmp/lk "$CARGO_TARGET_DIR"/debug/build/voice-livekit-*/out/livekit_ffi_subset.fds

Every message, field (number, type, label, type name, oneof) and enum value declared here must exist
upstream with the same shape. Exit status 1 on any difference.
"""
import glob
import importlib
import os
import sys

from google.protobuf import descriptor_pb2


def main() -> int:
    wheel_dir, fds_path = sys.argv[1], sys.argv[2]
    sys.path.insert(0, wheel_dir)
    messages, enums = {}, {}

    def walk(prefix, msgs, enum_types):
        for e in enum_types:
            enums[prefix + e.name] = {v.name: v.number for v in e.value}
        for m in msgs:
            messages[prefix + m.name] = m
            walk(prefix + m.name + ".", m.nested_type, m.enum_type)

    for path in glob.glob(os.path.join(wheel_dir, "livekit/rtc/_proto/*_pb2.py")):
        module = importlib.import_module("livekit.rtc._proto." + os.path.basename(path)[:-3])
        fd = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        walk("." + fd.package + ".", fd.message_type, fd.enum_type)

    ours = descriptor_pb2.FileDescriptorSet.FromString(open(fds_path, "rb").read())
    errors, counted = [], [0, 0]

    def check(prefix, msgs, enum_types):
        for e in enum_types:
            upstream = enums.get(prefix + e.name)
            if upstream is None:
                errors.append(f"enum {prefix}{e.name} not upstream")
                continue
            errors.extend(f"enum value {prefix}{e.name}.{v.name}={v.number}, upstream {upstream.get(v.name)}"
                          for v in e.value if upstream.get(v.name) != v.number)
        for m in msgs:
            name = prefix + m.name
            counted[0] += 1
            up = messages.get(name)
            if up is None:
                errors.append(f"message {name} not upstream")
                continue
            up_fields = {f.name: f for f in up.field}
            for f in m.field:
                counted[1] += 1
                g = up_fields.get(f.name)
                if g is None:
                    errors.append(f"field {name}.{f.name} not upstream")
                    continue
                mine = (f.number, f.type, f.label, f.type_name,
                        m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None)
                theirs = (g.number, g.type, g.label, g.type_name,
                          up.oneof_decl[g.oneof_index].name if g.HasField("oneof_index") else None)
                if mine != theirs:
                    errors.append(f"field {name}.{f.name}: ours {mine}, upstream {theirs}")
            check(name + ".", m.nested_type, m.enum_type)

    for fd in ours.file:
        check("." + fd.package + ".", fd.message_type, fd.enum_type)
    for e in errors:
        print(e)
    print(f"checked {counted[0]} messages, {counted[1]} fields: {len(errors)} differences")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""text_first.py SCRIPT OUT NAME: writes to OUT the ckpt script SCRIPT with its text
output NAME (declaration, body and commit) moved before the first output, so that a
run finishes that file first, whatever fails after it (a text file is renamed into
place at once, not by the thread that commits the others)."""
import sys

lines = open(sys.argv[1]).read().split("\n")
start = next(i for i, line in enumerate(lines)
             if "ckpt.output" in line and f'"{sys.argv[3]}"' in line)
end = next(i for i in range(start, len(lines)) if "ckpt.commit" in lines[i]) + 1
block = lines[start:end]
del lines[start:end]
first = next(i for i, line in enumerate(lines) if "ckpt.output" in line)
lines[first:first] = block
open(sys.argv[2], "w").write("\n".join(lines))

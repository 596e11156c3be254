# The PR_SET_THP_DISABLE run of ab-producer-purge.txt: python3 no-thp.py BINARY ARGS...
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(41, 1, 0, 0, 0) == 0
os.execv(sys.argv[1], sys.argv[1:])

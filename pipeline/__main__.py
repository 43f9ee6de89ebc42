import os

# Keep TensorFlow's C++ INFO/WARNING chatter (oneDNN notices, CUDA probing) out of stage logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.cli import main

raise SystemExit(main())

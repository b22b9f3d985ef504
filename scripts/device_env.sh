# Sourced by the scripts/device_*.sh scripts on the CUDA machine: unpacks the CUDA build of
# xtask carried in .devcheck/bin/xtask.xz (compressed to stay inside the transfer limit), puts
# CUDA 13's cuBLAS, cuRAND, NVRTC and runtime from PyTorch's wheels on the library path, and
# points /work/wt-cuda (where the binary was built: its compiled-in asset paths) at this tree.
# Sets X to the binary.
if [ -f .devcheck/bin/xtask.xz ]; then
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    .devcheck/bin/xtask.xz .devcheck/bin/xtask && chmod +x .devcheck/bin/xtask
fi
site=$(python3 -c 'import os, nvidia; print(os.path.dirname(list(nvidia.__path__)[0]))')
libs=$(find "$site/nvidia" -name 'lib*.so*' \( -name 'libcublas*' -o -name 'libcurand*' -o -name 'libnvrtc*' -o -name 'libcudart*' \) -printf '%h\n' | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:-}"
mkdir -p /work && ln -sfn "$PWD" /work/wt-cuda
X=.devcheck/bin/xtask

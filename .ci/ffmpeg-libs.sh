#!/usr/bin/env bash
# Installs FFmpeg's shared libraries (Debian packages) where they are missing: torchcodec, one of the
# loader benchmark's baselines, loads them at import. PyAV and decord bring their own and need none.
set -euo pipefail
if ldconfig -p | grep -q 'libavcodec\.so'; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "ffmpeg-libs: no FFmpeg libraries and no root apt-get here; torchcodec baselines will be skipped" >&2
    exit 0
fi
PKGS="libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8"
apt-get install -y -q --no-install-recommends $PKGS >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $PKGS >/dev/null
}

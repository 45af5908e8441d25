#!/usr/bin/env bash
# Re-encodes the demo clip: 10 s of ffmpeg's test pattern with a quiet tone,
# H.264 (main) + AAC in MPEG-TS, cut into five segments of exactly 2 s
# (a keyframe every 50 frames at 25 fps). About 330 KB in all; `outpost demo`
# loops the segments as a live stream.
set -euo pipefail
cd "$(dirname "$0")"
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=426x240:rate=25:duration=10" \
  -f lavfi -i "sine=frequency=330:sample_rate=48000:duration=10" \
  -filter:a "volume=0.05" \
  -c:v libx264 -profile:v main -preset veryslow -b:v 180k -maxrate 220k -bufsize 360k \
  -g 50 -keyint_min 50 -sc_threshold 0 -pix_fmt yuv420p \
  -c:a aac -b:a 48k -ac 1 \
  -f hls -hls_time 2 -hls_playlist_type vod -hls_segment_filename 'seg-%d.ts' clip.m3u8
rm clip.m3u8

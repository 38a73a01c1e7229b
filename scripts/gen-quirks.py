#!/usr/bin/env python3
"""Generate the device-quirk corpus in tests/quirks/ (issue 16).

Every case starts from the repo's own clips (assets/demo.h264,
assets/demo.h265) and audio ffmpeg synthesises (a sine tone), muxed by
ffmpeg's MPEG-2 PS muxer (`-f vob`); the quirk is then applied at byte
level by the small PS rewriter below, the way a sloppy device would get it
wrong. Nothing third-party goes in. Deterministic: running it again gives
the same files (fixed seeds; ffmpeg's muxer output is stable for stream
copy). Needs python3 and ffmpeg (libx264 for the resolution-change case).

    scripts/gen-quirks.py            # writes tests/quirks/*.ps / *.rtp
"""

import os
import random
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "quirks")
TMP = tempfile.mkdtemp(prefix="camgate-quirks-")


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def tmp(name):
    return os.path.join(TMP, name)


# ---- PS packets ----------------------------------------------------------


def split_ps(data):
    """[(code, bytes)] for every pack header, system header, PES, end code."""
    out, i = [], 0
    while i + 4 <= len(data):
        assert data[i:i + 3] == b"\0\0\1", f"lost sync at {i}"
        code = data[i + 3]
        if code == 0xBA:
            n = 14 + (data[i + 13] & 7)
        elif code == 0xB9:
            n = 4
        else:
            n = 6 + struct.unpack(">H", data[i + 4:i + 6])[0]
        out.append((code, data[i:i + n]))
        i += n
    return out


def join(packets):
    return b"".join(p for _, p in packets)


def ts_bytes(prefix, ts):
    ts &= (1 << 33) - 1
    return bytes([
        (prefix << 4) | (((ts >> 30) & 7) << 1) | 1,
        (ts >> 22) & 0xFF,
        (((ts >> 15) & 0x7F) << 1) | 1,
        (ts >> 7) & 0xFF,
        ((ts & 0x7F) << 1) | 1,
    ])


def read_ts(b):
    return (((b[0] >> 1) & 7) << 30) | (b[1] << 22) | ((b[2] >> 1) << 15) | (b[3] << 7) | (b[4] >> 1)


def pes(sid, payload, pts=None, dts=None, zero_len=False):
    if pts is None:
        flags, data = 0x00, b""
    elif dts is None:
        flags, data = 0x80, ts_bytes(2, pts)
    else:
        flags, data = 0xC0, ts_bytes(3, pts) + ts_bytes(1, dts)
    body = bytes([0x80, flags, len(data)]) + data + payload
    length = 0 if zero_len else len(body)
    assert length < 65536
    return b"\0\0\1" + bytes([sid]) + struct.pack(">H", length) + body


def parse_pes(p):
    """(stream_id, pts, dts, payload) of an MPEG-2 PES."""
    flags, hlen = p[7], p[8]
    pts = read_ts(p[9:14]) if flags & 0x80 else None
    dts = read_ts(p[14:19]) if flags & 0xC0 == 0xC0 else None
    return p[3], pts, dts, p[9 + hlen:]


def pack_scr(p):
    b = p
    return (((b[4] >> 3) & 7) << 30) | ((b[4] & 3) << 28) | (b[5] << 20) | (((b[6] >> 3) & 0x1F) << 15) \
        | ((b[6] & 3) << 13) | (b[7] << 5) | (b[8] >> 3)


def pack(scr, mux_rate=b"\x01\x89\xc3", stuffing=0):
    scr &= (1 << 33) - 1
    return b"\0\0\1\xba" + bytes([
        0x44 | (((scr >> 30) & 7) << 3) | ((scr >> 28) & 3),
        (scr >> 20) & 0xFF,
        (((scr >> 15) & 0x1F) << 3) | 0x04 | ((scr >> 13) & 3),
        (scr >> 5) & 0xFF,
        ((scr & 0x1F) << 3) | 0x04,
        0x01,
    ]) + mux_rate + bytes([0xF8 | stuffing]) + b"\xff" * stuffing


def crc32_mpeg2(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def psm(entries, version=0, map_len=None, bad_crc=False):
    """Program stream map; entries are (stream_type, stream_id, descriptors)."""
    emap = b"".join(bytes([t, i]) + struct.pack(">H", len(d)) + d for t, i, d in entries)
    body = bytes([0x80 | (version & 0x1F), 0xFF]) + b"\0\0"
    body += struct.pack(">H", len(emap) if map_len is None else map_len) + emap
    head = b"\0\0\1\xbc" + struct.pack(">H", len(body) + 4)
    crc = crc32_mpeg2(head + body)
    if bad_crc:
        crc ^= 0xDEADBEEF
    return head + body + struct.pack(">I", crc)


ISO639_CHI = b"\x0a\x04chi\x00"

# ---- sources ---------------------------------------------------------------


def video_ps(src, fmt, frames=50, extra=()):
    out = tmp(f"{os.path.basename(src)}-{frames}-{len(extra)}.vob")
    ffmpeg("-r", "25", "-f", fmt, "-i", src, "-frames:v", str(frames), *extra, "-c", "copy",
           "-f", "vob", out)
    return open(out, "rb").read()


def audio_raw(fmt, *codec):
    out = tmp(f"tone.{fmt}")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000", "-t", "3", *codec, "-f", fmt, out)
    return open(out, "rb").read()


def g711_frames(fmt):
    raw = audio_raw(fmt)
    return [(raw[i:i + 160], i // 160 * 1800) for i in range(0, len(raw) - 159, 160)]


def adts_frames():
    raw = audio_raw("adts", "-ar", "16000", "-ac", "1", "-c:a", "aac", "-b:a", "32k")
    out, i, n = [], 0, 0
    while i + 7 <= len(raw):
        length = ((raw[i + 3] & 3) << 11) | (raw[i + 4] << 3) | (raw[i + 5] >> 5)
        out.append((raw[i:i + length], n * 1024 * 90000 // 16000))
        i += length
        n += 1
    return out


def normalise_video(packets, sid=0xE0):
    """ffmpeg numbers DVD video 0xE0.. already; force the GB28181 id."""
    out = []
    for code, p in packets:
        if 0xE0 <= code <= 0xEF:
            p = p[:3] + bytes([sid]) + p[4:]
            code = sid
        out.append((code, p))
    return out


def video_pts_base(packets):
    for code, p in packets:
        if 0xE0 <= code <= 0xEF:
            _, pts, _, _ = parse_pes(p)
            if pts is not None:
                return pts
    return 0


def with_audio(packets, frames, sid=0xC0, start_psm=None):
    """Interleave audio PES after the pack whose video PTS reaches them."""
    base = video_pts_base(packets)
    out, k, current = [], 0, base
    for code, p in packets:
        out.append((code, p))
        if 0xE0 <= code <= 0xEF:
            _, pts, _, _ = parse_pes(p)
            if pts is not None:
                current = pts
            while k < len(frames) and base + frames[k][1] <= current:
                out.append((sid, pes(sid, frames[k][0], base + frames[k][1])))
                k += 1
    return out


def insert_after_first_pack(packets, extra):
    i = next(n for n, (c, _) in enumerate(packets) if c == 0xBA)
    j = i + 1
    while j < len(packets) and packets[j][0] == 0xBB:
        j += 1
    return packets[:j] + [(0xBC, e) for e in extra] + packets[j:]


def gop_starts(packets):
    """Indices of video PES holding a sequence parameter set (H.264 type 7
    or H.265 type 33): where each GOP begins."""
    return [n for n, (c, p) in enumerate(packets)
            if 0xE0 <= c <= 0xEF and (b"\0\0\1\x67" in p or b"\0\0\1\x42\x01" in p)]


def psm_before_each_keyframe_pack(packets, make_psm):
    """A PSM before the PES that opens each GOP, as devices send one with
    every keyframe."""
    starts = set(gop_starts(packets))
    out = []
    for n, (code, p) in enumerate(packets):
        if n in starts:
            out.append((0xBC, make_psm(n)))
        out.append((code, p))
    return out


def write(name, data):
    assert len(data) <= 400 * 1024, f"{name}: {len(data)} bytes"
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    print(f"{name:32} {len(data):7} bytes")


# ---- RTP -------------------------------------------------------------------


def rtp_file(ps, *, padding=False, extension=False, marker=True, seq0=1000, ts_jump=False):
    """PS over RTP (GB/T 28181 §9.2, PT 96), RFC 4571 length-prefixed, one
    pack per RTP frame boundary; quirks as asked."""
    rng = random.Random(16)
    packets = split_ps(ps)
    groups, cur = [], []
    for code, p in packets:
        if code == 0xBA and cur:
            groups.append(cur)
            cur = []
        cur.append((code, p))
    groups.append(cur)
    out, seq, ts, n = bytearray(), seq0, 123456, 0
    for gi, g in enumerate(groups):
        data = join(g)
        for code, p in g:
            if 0xE0 <= code <= 0xEF:
                _, pts, _, _ = parse_pes(p)
                if pts is not None:
                    ts = pts
        if ts_jump and gi >= len(groups) // 2:
            ts += 900000
        chunks = [data[i:i + 1400] for i in range(0, len(data), 1400)]
        for ci, c in enumerate(chunks):
            pad = b""
            if padding and n % 3 == 0:
                pad = bytes(rng.randrange(256) for _ in range(3)) + b"\x04"
            ext = b""
            if extension and n % 2 == 0:
                ext = b"\xbe\xde\x00\x01" + b"\x10\xaa\x00\x00"
            m = marker and ci == len(chunks) - 1
            b0 = 0x80 | (0x20 if pad else 0) | (0x10 if ext else 0)
            hdr = struct.pack(">BBHII", b0, 96 | (0x80 if m else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, 0x1234ABCD)
            pkt = hdr + ext + c + pad
            out += struct.pack(">H", len(pkt)) + pkt
            seq += 1
            n += 1
    return bytes(out)


# ---- cases -------------------------------------------------------------------


def main():
    os.makedirs(OUT, exist_ok=True)
    h264 = os.path.join(ROOT, "assets", "demo.h264")
    h265 = os.path.join(ROOT, "assets", "demo.h265")
    base = normalise_video(split_ps(video_ps(h264, "h264")))
    base265 = normalise_video(split_ps(video_ps(h265, "hevc")))
    alaw, ulaw = g711_frames("alaw"), g711_frames("mulaw")
    gb_psm = lambda v=0, **kw: psm([(0x1B, 0xE0, ISO639_CHI), (0x90, 0xC0, b"")], version=v, **kw)

    # PSM quirks (H.264 + G.711A on 0xC0).
    av = with_audio(base, alaw)
    write("psm_map_len_short.ps", join(psm_before_each_keyframe_pack(av, lambda _: gb_psm(map_len=8))))
    write("psm_map_len_long.ps", join(psm_before_each_keyframe_pack(av, lambda _: gb_psm(map_len=0x40))))
    write("psm_descriptors.ps", join(psm_before_each_keyframe_pack(av, lambda _: psm(
        [(0x1B, 0xE0, ISO639_CHI + b"\x40\x04HKVS"), (0x90, 0xC0, ISO639_CHI)]))))
    write("psm_bad_crc.ps", join(psm_before_each_keyframe_pack(
        with_audio(base, ulaw), lambda _: psm([(0x1B, 0xE0, b""), (0x91, 0xC0, b"")], bad_crc=True))))
    # Version bump: video only, then audio added from the second GOP.
    second = gop_starts(base)[1]
    bumped = psm_before_each_keyframe_pack(base[:second], lambda _: psm([(0x1B, 0xE0, b"")]))
    later = [(0xBC, gb_psm(v=1))] + with_audio(base[second:], alaw)
    write("psm_version_bump.ps", join(bumped + later))

    # No PSM: what ffmpeg writes; audio decided from the payload.
    write("nopsm_g711a.ps", join(with_audio(base, alaw)))
    write("nopsm_g711u.ps", join(with_audio(base, ulaw)))
    write("nopsm_aac.ps", join(with_audio(base, adts_frames())))
    mp2 = tmp("mp2.vob")
    ffmpeg("-r", "25", "-f", "h264", "-i", h264, "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000", "-frames:v", "50", "-t", "2", "-c:v", "copy",
           "-c:a", "mp2", "-ac", "1", "-b:a", "64k", "-f", "vob", mp2)
    write("nopsm_mp2.ps", join(normalise_video(split_ps(open(mp2, "rb").read()))))
    write("nopsm_h265_g711a.ps", join(with_audio(base265, alaw)))

    # Audio only (video announced in the PSM, never sent) and video only.
    audio_only = [(c, p) for c, p in av if not 0xE0 <= c <= 0xEF]
    write("audio_only_g711a.ps", join(insert_after_first_pack(audio_only, [gb_psm()])))
    write("video_only.ps", join(base))

    # Cut captures and garbage.
    whole = join(with_audio(base, alaw))
    # Mid-PES at an offset whose bytes read as an RFC 4571 length + RTP v2.
    first_video = whole.index(b"\0\0\1\xe0")
    cut = next(i for i in range(first_video + 200, len(whole) - 14)
               if whole[i + 2] >> 6 == 2 and struct.unpack(">H", whole[i:i + 2])[0] >= 12
               and whole[i + 3] < 0xC0)
    write("start_mid_pes.ps", whole[cut:])
    second_pack = whole.index(b"\0\0\1\xba", 4)
    write("start_mid_pack.ps", whole[second_pack + 6:])
    rng = random.Random(1616)
    garbage = []
    for n, (c, p) in enumerate(with_audio(base, alaw)):
        if c == 0xBA and n % 5 == 0 and n > 0:
            garbage.append((0, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))))
        garbage.append((c, p))
    write("garbage_between_packs.ps", join(garbage))

    # PES and pack-level quirks.
    def rewrite_video(packets, fn):
        out = []
        for c, p in packets:
            if 0xE0 <= c <= 0xEF:
                sid, pts, dts, payload = parse_pes(p)
                p = fn(sid, pts, dts, payload)
            out.append((c, p))
        return out

    keyed = [0]

    def drop_pts(sid, pts, dts, payload):
        keyed[0] += 1
        # Keep the timestamp only on PES that start an IDR's access unit.
        keep = pts is not None and b"\0\0\1\x65" in payload[:200] or b"\0\0\0\1\x67" in payload[:64]
        return pes(sid, payload, pts if keep else None, dts if keep else None)

    write("pes_without_pts.ps", join(rewrite_video(base, drop_pts)))
    write("pes_len0_video.ps", join(rewrite_video(base, lambda s, p, d, pl: pes(s, pl, p, d, zero_len=True))))

    def shift(packets, by):
        out = []
        for c, p in packets:
            if c == 0xBA:
                p = pack(pack_scr(p) + by, p[10:13])
            elif 0xC0 <= c <= 0xEF:
                sid, pts, dts, payload = parse_pes(p)
                p = pes(sid, payload, None if pts is None else pts + by, None if dts is None else dts + by)
            out.append((c, p))
        return out

    start = video_pts_base(base)
    write("pts_scr_wrap.ps", join(shift(with_audio(base, alaw), (1 << 33) - start - 90000)))
    one_gop = base[:second]
    write("scr_discontinuity.ps", join(with_audio(one_gop, alaw) + shift(with_audio(one_gop, alaw), 40 * 90000)))
    write("pack_stuffing.ps", join([(c, pack(pack_scr(p), p[10:13], 7) if c == 0xBA else p) for c, p in av]))
    write("no_system_header.ps", join([(c, p) for c, p in av if c != 0xBB]))

    # H.264 elementary-stream quirks, muxed by ffmpeg.
    es = open(h264, "rb").read()
    starts = [i + 3 for i in range(len(es) - 3) if es[i:i + 3] == b"\0\0\1"]
    nals = [es[a:b - 3].rstrip(b"\0") for a, b in zip(starts, starts[1:] + [len(es) + 3])]
    once, seen_ps = [], False
    for n in nals:
        if not n:
            continue
        t = n[0] & 0x1F
        if t in (7, 8) and seen_ps and t == 7:
            continue
        if t == 8 and len(once) > 3:
            continue
        if t == 5:
            seen_ps = True
        once.append(n)
    once_path = tmp("sps_once.h264")
    open(once_path, "wb").write(b"".join(b"\0\0\0\1" + n for n in once))
    write("sps_pps_once.ps", join(normalise_video(split_ps(video_ps(once_path, "h264")))))
    # SEI-only access units between frames (AUD + SEI, no slice).
    sei_au = b"\0\0\0\1\x09\xf0" + b"\0\0\0\1\x06\x05\x10" + bytes(range(0x20, 0x30)) + b"\x80"
    aus = es.split(b"\0\0\0\1\x09")
    with_sei = b"".join((b"\0\0\0\1\x09" + a + (sei_au if i % 10 == 5 else b"")) for i, a in enumerate(aus) if a)
    sei_path = tmp("sei.h264")
    open(sei_path, "wb").write(with_sei)
    write("aud_sei_only_units.ps", join(normalise_video(split_ps(video_ps(sei_path, "h264", frames=55)))))
    small = tmp("small.h264")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-frames:v", "25", "-c:v", "libx264",
           "-profile:v", "main", "-g", "25", "-bf", "0", "-b:v", "150k", "-bsf:v", "h264_metadata=aud=insert",
           "-f", "h264", small)
    # Cut the big clip after its first GOP (25 AUs) and follow with the small one.
    aud_positions = [i for i in range(len(es)) if es.startswith(b"\0\0\0\1\x09", i)]
    first_gop = es[:aud_positions[25]]
    change = tmp("change.h264")
    open(change, "wb").write(first_gop + open(small, "rb").read())
    write("resolution_change.ps", join(normalise_video(split_ps(video_ps(change, "h264")))))

    # H.265 with a PSM (type 0x24), frames split across many small PES.
    small_pes = normalise_video(split_ps(video_ps(h265, "hevc", extra=("-packetsize", "512"))))
    write("h265_psm_split_pes.ps", join(psm_before_each_keyframe_pack(small_pes, lambda _: psm([(0x24, 0xE0, b"")]))))

    # RTP carriage quirks (RFC 4571 framing, as a TCP capture would hold).
    ps = join(psm_before_each_keyframe_pack(av, lambda _: gb_psm()))
    write("rtp_padding.rtp", rtp_file(ps, padding=True))
    write("rtp_header_extension.rtp", rtp_file(ps, extension=True))
    write("rtp_no_marker.rtp", rtp_file(ps, marker=False))
    write("rtp_seq_wrap.rtp", rtp_file(ps, seq0=65500))
    write("rtp_timestamp_jump.rtp", rtp_file(ps, ts_jump=True))


if __name__ == "__main__":
    sys.exit(main())

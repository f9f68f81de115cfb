#!/usr/bin/env python3
"""Writes the committed seed corpora, fuzz/corpus/<target>/ (docs/fuzzing.md).

Real captures where we have them: ffmpeg's own RTMP byte stream (a listener here does the
handshake and records what ffmpeg sends: chunk size, the AMF0 connect command), and ffmpeg's
H.264/AAC in FLV tags (libx264 + AAC, 2 s of test pattern), cut into the bodies RTMP carries.
The WebSocket messages are docs/protocol.md's examples. RTP, RTCP and STUN seeds are built
here byte for byte to their RFC layouts, with the extensions and feedback WebRTC stacks send.

Usage: python3 fuzz/seeds.py   (needs ffmpeg; rewrites the seeds, deterministic but for x264)
"""
import base64, hashlib, hmac, json, os, socket, struct, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def framed(bodies, width=2):
    """[length][body] records, as the multi-message targets read them."""
    out = b""
    for b in bodies:
        b = b[: (1 << (8 * width)) - 1]
        out += len(b).to_bytes(width, "big") + b
    return out


# --- WebSocket messages: the protocol reference's examples -----------------------------------
def signal_decode():
    n = 0
    for line in open(os.path.join(ROOT, "docs", "protocol.md"), encoding="utf-8"):
        line = line.strip().strip("`")
        if line.startswith('{"type"') and line.endswith("}"):
            put("signal_decode", f"doc{n:02}.json", line)
            n += 1
    put("signal_decode", "comment.json", '{"type":"comment","text":"caf\\u00e9 \\ud83d\\ude00"}')
    put("signal_decode", "qoe.json", '{"type":"qoe","watch_ms":60000,"freezes":2,"context":{"rtt_ms":40}}')
    put("signal_decode", "moderate.json", '{"type":"moderate","action":"timeout","identity":"bob","secs":60}')


# --- JWTs: a valid token shape and claims -----------------------------------------------------
def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt_verify():
    claims = {"sub": "alice", "name": "Alice", "room": "demo", "role": "host", "exp": 4102444800, "nbf": 0, "profile": "standard"}
    put("jwt_verify", "claims.json", json.dumps(claims))
    put("jwt_verify", "claims_aud.json", json.dumps(dict(claims, aud=["a", "b"], role="viewer")))
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(b"fuzz-secret-0123456789abcdef", f"{head}.{body}".encode(), hashlib.sha256).digest())
    put("jwt_verify", "token.txt", f"{head}.{body}.{sig}")
    none = b64(json.dumps({"alg": "none"}).encode())
    put("jwt_verify", "alg_none.txt", f"{none}.{body}.")


# --- SDP: a browser-shaped publisher offer ----------------------------------------------------
OFFER = "\r\n".join([
    "v=0", "o=- 4215775240449105457 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
    "a=group:BUNDLE 0 1", "a=extmap-allow-mixed", "a=msid-semantic: WMS stream",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd", "a=ice-pwd:0123456789abcdefghijklmn", "a=ice-options:trickle",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass", "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=sendonly", "a=msid:stream audio0", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc", "a=fmtp:111 minptime=10;useinbandfec=1", "a=ssrc:1001 cname:x",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd", "a=ice-pwd:0123456789abcdefghijklmn",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass", "a=mid:1",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", "a=sendonly", "a=msid:stream video0",
    "a=rtcp-mux", "a=rtcp-rsize", "a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 transport-cc", "a=rtcp-fb:96 ccm fir", "a=rtcp-fb:96 nack", "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96", "a=rid:q send", "a=rid:h send", "a=rid:f send",
    "a=simulcast:send q;h;f", "",
])


def sdp_offer():
    put("sdp_offer", "publisher_offer.sdp", OFFER)
    put("sdp_offer", "no_media.sdp", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n")
    put("sdp_offer", "lf_only.sdp", OFFER.replace("\r\n", "\n"))


# --- STUN ---------------------------------------------------------------------------------------
MAGIC = bytes([0x21, 0x12, 0xA4, 0x42])


def stun(typ, attrs):
    body = b""
    for t, v in attrs:
        body += struct.pack(">HH", t, len(v)) + v + b"\0" * (-len(v) % 4)
    return struct.pack(">HH", typ, len(body)) + MAGIC + bytes(range(12)) + body


def stun_demux():
    bind = stun(1, [(0x0006, b"srvA:cli1"), (0x0024, b"\x6e\x00\x1e\xff"), (0x8029, b"\0" * 8), (0x0008, b"\0" * 20), (0x8028, b"\0" * 4)])
    nominate = stun(1, [(0x0006, b"srvB:cli2"), (0x0025, b""), (0x0008, b"\0" * 20)])
    success = stun(0x0101, [(0x0020, b"\x00\x01\x13\x8a\x2b\x12\xa4\x43")])
    dtls = bytes([22, 0xFE, 0xFD]) + b"\0" * 8 + struct.pack(">H", 12) + b"\x01" + b"\0" * 11
    rtp = bytes([0x80, 96, 0, 1]) + b"\0" * 8 + b"payload"
    script = b"".join(bytes([addr, len(d)]) + d for addr, d in
                      [(1, bind), (1, rtp), (1, dtls), (2, nominate), (2, rtp), (3, success), (3, rtp)])
    put("stun_demux", "bind_then_media", script)
    put("stun_demux", "bind", bytes([0, len(bind)]) + bind)


# --- RTP ------------------------------------------------------------------------------------------
def rtp(pt, seq, ts, ssrc, payload, exts=(), csrc=(), marker=False, padding=0):
    b0 = 0x80 | (0x10 if exts else 0) | len(csrc) | (0x20 if padding else 0)
    h = bytes([b0, (0x80 if marker else 0) | pt]) + struct.pack(">HII", seq, ts, ssrc)
    h += b"".join(struct.pack(">I", c) for c in csrc)
    if exts:
        e = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in exts)
        e += b"\0" * (-len(e) % 4)
        h += struct.pack(">HH", 0xBEDE, len(e) // 4) + e
    pad = (b"\0" * (padding - 1) + bytes([padding])) if padding else b""
    return h + payload + pad


VP8_KEY = bytes([0x90, 0xE0, 0x80, 0x01, 0x05, 0x20]) + bytes([0x50, 0x2D, 0x01, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01]) + b"\x11" * 20
VP8_DELTA = bytes([0x90, 0xE0, 0x80, 0x02, 0x05, 0x60, 0x31, 0x02, 0x00]) + b"\x22" * 20
H264_STAP = bytes([0x78, 0, 4, 0x67, 0x42, 0xC0, 0x1F, 0, 2, 0x68, 0xCE, 0, 3, 0x65, 0x88, 0x84])
H264_FU = bytes([0x7C, 0x85]) + b"\x33" * 30


def rtp_packet():
    exts = [(1, b"\x0a"), (3, b"\x00\x07"), (4, b"1"), (10, b"h")]
    leg = struct.pack(">IHIB", 0x11223344, 500, 90000, 96)
    for name, codec, p in [("vp8_key", 0, VP8_KEY), ("vp8_delta", 0, VP8_DELTA), ("h264_stap", 1, H264_STAP), ("h264_fu", 1, H264_FU)]:
        put("rtp_packet", name, bytes([codec, 2]) + leg + rtp(96, 1000, 3000, 0xABCDEF01, p, exts, marker=True))
    put("rtp_packet", "opus_csrc", bytes([3, 2]) + leg + rtp(111, 7, 960, 5, b"\xfc\xff\xfe", [(1, b"\x80")], csrc=[9, 10]))
    put("rtp_packet", "padded", bytes([0, 2]) + leg + rtp(96, 8, 3000, 5, VP8_DELTA, exts, padding=4))


def codec_payload():
    for name, p in [("vp8_key", VP8_KEY), ("vp8_delta", VP8_DELTA), ("h264_stap", H264_STAP), ("h264_fu", H264_FU),
                    ("h264_idr", bytes([0x65, 0x88, 0x84, 0x21])), ("vp9", bytes([0x8A, 0x80, 0x01, 0x00]))]:
        put("codec_payload", name, p)


def rtp_munger():
    ops = bytes([0, 0, 0]) + bytes([2, 1, 33]) * 10 + bytes([1, 1, 0]) + bytes([2, 1, 33]) * 5 + bytes([2, 0xFC, 0])
    ops += bytes([0, 40, 3]) + bytes([3, 1, 33, 0x81, 1, 33, 2, 1, 33]) * 8
    put("rtp_munger", "script", bytes([1, 244, 0, 0, 0, 9]) + ops)


# --- RTCP -----------------------------------------------------------------------------------------
def rtcp(pt, fmt, body):
    length = (len(body) + 4) // 4 - 1
    return bytes([0x80 | fmt, pt]) + struct.pack(">H", length) + body


def rtcp_feedback():
    rr = rtcp(201, 1, struct.pack(">I", 7) + struct.pack(">IIIIII", 1, 0x01000010, 1000, 20, 0, 0))
    sdes = rtcp(202, 1, struct.pack(">I", 7) + bytes([1, 4]) + b"cnam" + b"\0\0")
    pli = rtcp(206, 1, struct.pack(">II", 7, 1))
    fir = rtcp(206, 4, struct.pack(">II", 7, 0) + struct.pack(">IBxxx", 1, 3))
    remb = rtcp(206, 15, struct.pack(">II", 7, 0) + b"REMB" + bytes([1, 0x0B, 0xD0, 0x90]) + struct.pack(">I", 1))
    nack = rtcp(205, 1, struct.pack(">II", 7, 1) + struct.pack(">HH", 100, 0b101))
    # TWCC: base 0, 10 packets, reference time 0, count 1; one run-length chunk (all small delta).
    twcc = rtcp(205, 15, struct.pack(">II", 7, 1) + struct.pack(">HH", 0, 10) + bytes([0, 0, 0, 1]) + struct.pack(">H", 0x200A) + bytes([4] * 10) + b"\0\0")
    def dgram(ms, *pkts):
        d = b"".join(pkts)
        return bytes([ms]) + struct.pack(">H", len(d)) + d
    put("rtcp_feedback", "rr_pli", dgram(10, rr, sdes, pli))
    put("rtcp_feedback", "fir_remb", dgram(20, rr, fir) + dgram(5, rr, remb))
    put("rtcp_feedback", "nack_twcc", dgram(30, rr, nack) + dgram(40, twcc) + dgram(40, twcc))


# --- Payments and the API --------------------------------------------------------------------------
def payment_webhook():
    for name, body in [
        ("payment", {"type": "payment", "id": "pay_1", "room": "demo", "identity": "ann", "name": "Ann", "tier": 2, "amount_minor": 500, "currency": "EUR", "live_id": "L1"}),
        ("refund", {"type": "refund", "id": "re_1", "payment": "pay_1"}),
    ]:
        b = json.dumps(body).encode()
        t = 1_800_000_000
        mac = hmac.new(b"whsec-fuzz-0123456789", f"{t}.".encode() + b, hashlib.sha256).hexdigest()
        header = f"t={t},v1=deadbeef,v1={mac}".encode()
        put("payment_webhook", name, bytes([len(header)]) + header + b)


def api_bodies():
    put("api_bodies", "create.json", json.dumps({"title": "Red sneakers", "price_minor": 8900, "currency": "eur",
                                                  "checkout_url": "https://shop.example/p/1?x=1", "image_url": "https://cdn.example/i.png"}))
    put("api_bodies", "own_image.json", json.dumps({"image_url": "/media/products/p1f?v=3", "title": " A  b "}))
    put("api_bodies", "png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")


def chat_text():
    put("chat_text", "plain", b"\x2chello   world  ")
    put("chat_text", "nfc_emoji", b"\x2ccafe\xcc\x81 \xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 ok")
    put("chat_text", "zalgo", "\x2cz\u0334\u0335\u0336\u0337\u0338".encode())
    words = open(os.path.join(ROOT, "signaling", "data", "blocked-words.txt"), "rb").read()[:2000]
    put("chat_text", "word_list", b"\xff" + words)


def whip_frag():
    put("whip_frag", "trickle", "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
        "a=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\na=end-of-candidates\r\n")
    put("whip_frag", "restart", "a=ice-ufrag:ysXw\r\na=ice-pwd:vw5LmwG4y/e6dPP/zAP9Gp5k\r\n")
    put("whip_frag", "answer", "v=0\r\na=ice-lite\r\na=ice-options:trickle\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
        "a=ice-ufrag:NpTpsUWfuguGgTlU\r\na=ice-pwd:GbQjKlqImIjTgkVSUDsZibPDXQwLDfeE\r\na=mid:0\r\n"
        "a=candidate:2693830880 1 udp 2130706431 203.0.113.7 7882 typ host\r\n"
        "a=candidate:2693830880 2 udp 2130706430 203.0.113.7 7882 typ host\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n")


# --- RTMP and FLV from ffmpeg ---------------------------------------------------------------------
def ffmpeg_flv():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "a.flv")
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=15",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "2",
                        "-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-bf", "2", "-c:a", "aac", "-b:a", "64k",
                        "-ac", "2", "-f", "flv", out], check=True)
        data = open(out, "rb").read()
    at = 9 + 4
    tags = []
    while at + 11 <= len(data):
        kind = data[at]
        size = int.from_bytes(data[at + 1:at + 4], "big")
        ts = int.from_bytes(data[at + 4:at + 7], "big") | (data[at + 7] << 24)
        tags.append((kind, ts, data[at + 11:at + 11 + size]))
        at += 11 + size + 4
    return tags


def chunk_stream(messages, chunk=4096):
    """RTMP chunks (fmt 0 then fmt 3) for (csid, type, ts, payload) messages, after SetChunkSize."""
    out = bytes([2]) + struct.pack(">I", 0)[1:] + struct.pack(">I", 4)[1:] + bytes([1]) + struct.pack("<I", 0) + struct.pack(">I", chunk)
    for csid, typ, ts, payload in messages:
        out += bytes([csid]) + struct.pack(">I", min(ts, 0xFFFFFF))[1:] + struct.pack(">I", len(payload))[1:] + bytes([typ]) + struct.pack("<I", 1)
        for i in range(0, max(len(payload), 1), chunk):
            if i:
                out += bytes([0xC0 | csid])
            out += payload[i:i + chunk]
    return out


def ffmpeg_rtmp_capture():
    """What ffmpeg sends after the handshake (chunk size, connect), recorded by a listener."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = []

    def serve():
        c, _ = srv.accept()
        c.settimeout(3)
        buf = b""
        while len(buf) < 1537:
            buf += c.recv(65536)
        c.sendall(b"\x03" + b"\0" * 8 + os.urandom(1528) + buf[1:1537])
        rest = buf[1537:]
        while len(rest) < 1536:
            rest += c.recv(65536)
        stream = rest[1536:]
        end = time.time() + 2
        try:
            while time.time() < end:
                b = c.recv(65536)
                if not b:
                    break
                stream += b
        except socket.timeout:
            pass
        got.append(stream)
        c.close()

    th = threading.Thread(target=serve)
    th.start()
    subprocess.run(["ffmpeg", "-loglevel", "quiet", "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=15", "-t", "3",
                    "-c:v", "libx264", "-preset", "ultrafast", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/key"], timeout=20)
    th.join()
    srv.close()
    return got[0] if got else b""


def media():
    tags = ffmpeg_flv()
    video = [b for k, _, b in tags if k == 9]
    audio = [b for k, _, b in tags if k == 8]
    put("flv_video", "config_idr_p_b", framed(video[:6]))
    put("flv_video", "config_only", framed(video[:1]))
    put("aac_audio", "config_frames", framed(audio[:12]))
    put("aac_audio", "config_only", framed(audio[:1]))
    connect = ffmpeg_rtmp_capture()
    if connect:
        put("rtmp_chunks", "ffmpeg_connect", bytes([77]) + connect)
    msgs = [(6, k, ts, b) for k, ts, b in tags[:12] if k in (8, 9)]
    put("rtmp_chunks", "media", bytes([200]) + chunk_stream(msgs))


def main():
    for f in [signal_decode, jwt_verify, sdp_offer, stun_demux, rtp_packet, codec_payload, rtp_munger, rtcp_feedback,
              payment_webhook, api_bodies, chat_text, whip_frag, media]:
        f()
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(HERE, "corpus")) for f in fs)
    print(f"seeds: {total} bytes in fuzz/corpus/")


if __name__ == "__main__":
    sys.exit(main())

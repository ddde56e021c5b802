#!/usr/bin/env python3
"""Seed corpus for fuzz_packet: valid lab-like frames (see fuzz_packet.c for the record format)."""
import os
import socket
import struct
import sys

PORT_MAC = [bytes([2, 0, 0, 0, 0, i + 1]) for i in range(3)]
PEER = bytes([2, 0xaa, 0, 0, 0, 1])
CLIENT, VIP, REAL, LIP = '198.18.2.2', '198.19.0.1', '198.18.30.11', '198.18.30.100'


def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def ip4(src, dst, proto, payload, ttl=64, df=True):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 1, 0x4000 if df else 0, ttl, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload


def l4(src, dst, proto, hdr_wo_csum, csum_off, data=b''):
    seg = hdr_wo_csum + data
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, proto, len(seg))
    c = csum(pseudo + seg)
    return seg[:csum_off] + struct.pack('!H', c) + seg[csum_off + 2:]


def tcp(src, dst, sport, dport, flags, data=b'', seq=1000, ack=0, opts=b''):
    opts += b'\0' * (-len(opts) % 4)
    h = struct.pack('!HHIIBBHHH', sport, dport, seq, ack, (5 + len(opts) // 4) << 4, flags, 65535, 0, 0) + opts
    return ip4(src, dst, 6, l4(src, dst, 6, h, 16, data))


# MSS 1460, SACK-permitted, timestamps (TSval 1000), NOP, window scale 7: a Linux client's SYN.
SYN_OPTS = bytes([2, 4, 0x05, 0xb4, 4, 2, 8, 10]) + struct.pack('!II', 1000, 0) + bytes([1, 3, 3, 7])
# NOP NOP timestamps: the ACK's (TSecr 0x17: wscale 7 and SACK in our TSval's low bits).
ACK_OPTS = bytes([1, 1, 8, 10]) + struct.pack('!II', 1010, 0x17)


def udp(src, dst, sport, dport, data=b'hello'):
    h = struct.pack('!HHHH', sport, dport, 8 + len(data), 0)
    return ip4(src, dst, 17, l4(src, dst, 17, h, 6, data))


def icmp(src, dst, typ, code, rest, data=b''):
    m = struct.pack('!BBH', typ, code, 0) + rest + data
    return ip4(src, dst, 1, m[:2] + struct.pack('!H', csum(m)) + m[4:])


def eth(port, payload, ethertype=0x0800, src=PEER):
    return PORT_MAC[port] + src + struct.pack('!H', ethertype) + payload


def rec(port, frame):
    return bytes([port]) + struct.pack('!H', len(frame)) + frame


def arp_req(port, target):
    a = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 1, PEER, socket.inet_aton('198.18.20.2'), b'\0' * 6,
                    socket.inet_aton(target))
    return b'\xff' * 6 + PEER + b'\x08\x06' + a


def main(out):
    os.makedirs(out, exist_ok=True)
    syn = tcp(CLIENT, VIP, 40000, 80, 0x02)
    seeds = {
        'tcp_syn': rec(1, eth(1, syn)),
        'tcp_conn': rec(1, eth(1, syn)) + rec(2, eth(2, tcp(REAL, LIP, 8080, 1024, 0x12))) +
                    rec(1, eth(1, tcp(CLIENT, VIP, 40000, 80, 0x10, b'data'))) +
                    rec(1, eth(1, tcp(CLIENT, VIP, 40000, 80, 0x11))),
        'udp': rec(1, eth(1, udp(CLIENT, VIP, 40001, 80))) + rec(2, eth(2, udp(REAL, LIP, 8080, 1024))),
        'ping_vip': rec(1, eth(1, icmp(CLIENT, VIP, 8, 0, struct.pack('!HH', 77, 1), b'x' * 32))),
        'ping_local': rec(1, eth(1, icmp(CLIENT, '198.18.20.1', 8, 0, struct.pack('!HH', 78, 1)))),
        'icmp_err': rec(1, eth(1, syn)) +
                    rec(2, eth(2, icmp(REAL, LIP, 3, 3, b'\0\0\0\0', tcp(LIP, REAL, 1024, 8080, 0x02)[:28]))),
        'frag_needed': rec(1, eth(1, tcp(CLIENT, VIP, 40002, 80, 0x02))) +
                       rec(1, eth(1, tcp(CLIENT, VIP, 40002, 80, 0x10, b'z' * 1300))),
        'ttl1': rec(1, eth(1, ip4(CLIENT, VIP, 6, tcp(CLIENT, VIP, 40003, 80, 0x02)[20:], ttl=1))),
        'arp': rec(1, arp_req(1, VIP)),
        # SYN proxy (443 on): a SYN, then an ACK whose cookie the harness fills in (port byte bit 7,
        # MSS index 3), data, and the real's SYN-ACK to the first LIP port a fresh pool might give.
        'synproxy': rec(1, eth(1, tcp(CLIENT, VIP, 40010, 443, 0x02, opts=SYN_OPTS))) +
                    rec(0xb1, eth(1, tcp(CLIENT, VIP, 40010, 443, 0x10, seq=1001, opts=ACK_OPTS))) +
                    rec(1, eth(1, tcp(CLIENT, VIP, 40010, 443, 0x18, b'early', seq=1001, opts=ACK_OPTS))) +
                    rec(2, eth(2, tcp(REAL, LIP, 8080, 1024, 0x12, seq=5000, opts=SYN_OPTS))),
        'synproxy_bad_ack': rec(1, eth(1, tcp(CLIENT, VIP, 40011, 443, 0x10, seq=1001, opts=ACK_OPTS))),
        'synproxy_auto': rec(1, eth(1, tcp(CLIENT, VIP, 40012, 444, 0x02, opts=SYN_OPTS))) +
                         rec(1, eth(1, tcp(CLIENT, VIP, 40013, 444, 0x02, opts=SYN_OPTS))) +
                         rec(0x91, eth(1, tcp(CLIENT, VIP, 40013, 444, 0x10, seq=1001, opts=ACK_OPTS))),
        # uplink-a's kernel interface (port byte 3 = a frame the kernel sends through it): a BGP
        # session up and its answer down, an ARP request for the port address (mirrored up).
        'kernel_bgp': rec(0, eth(0, tcp('198.18.10.2', '198.18.10.1', 40179, 179, 0x02))) +
                      rec(3, PEER + PORT_MAC[0] + b'\x08\x00' + tcp('198.18.10.1', '198.18.10.2', 179, 40179, 0x12)),
        'kernel_arp': rec(0, arp_req(0, '198.18.10.1')),
    }
    # A conn per client-address mode (TCP 81 PROXY v2, 82 PROXY v1, 83 TOA; UDP 81 PROXY v2):
    # handshake, first payload, its retransmission, the real's ack, options with SACK and TOA.
    for port in (81, 82, 83):
        c = 41000 + port
        seeds['caddr_tcp_%d' % port] = (
            rec(1, eth(1, tcp(CLIENT, VIP, c, port, 0x02, seq=5000))) +
            rec(2, eth(2, tcp(REAL, LIP, 8080, 1024, 0x12, seq=9000, ack=5001))) +
            rec(1, eth(1, tcp(CLIENT, VIP, c, port, 0x10, seq=5001, ack=9001, opts=b'\x01\x01\x08\x0a' + b'\0' * 8))) +
            rec(1, eth(1, tcp(CLIENT, VIP, c, port, 0x18, b'GET / HTTP/1.0\r\n', seq=5001, ack=9001))) +
            rec(1, eth(1, tcp(CLIENT, VIP, c, port, 0x18, b'GET / HTTP/1.0\r\n', seq=5001, ack=9001))) +
            rec(2, eth(2, tcp(REAL, LIP, 8080, 1024, 0x18, b'HTTP', seq=9001, ack=5045,
                              opts=b'\x01\x01\x05\x0a' + struct.pack('!II', 5100, 5200)))) +
            rec(1, eth(1, tcp(CLIENT, VIP, c, port, 0x10, seq=5017, ack=9005, opts=b'\xfe\x08' + b'\0' * 6))) +
            rec(1, eth(1, tcp(CLIENT, VIP, c, port, 0x11, seq=5017, ack=9005))))
    seeds['caddr_udp'] = rec(1, eth(1, udp(CLIENT, VIP, 41100, 81))) + rec(2, eth(2, udp(REAL, LIP, 8080, 1024)))
    for name, data in seeds.items():
        with open(os.path.join(out, name), 'wb') as f:
            f.write(data)


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'build/fuzz/corpus')

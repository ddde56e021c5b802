{
  "targets": [
    {
      "target_name": "retrace",
      "sources": [
        "native/binding/binding.cc",
        "native/binding/binding_tables.cc",
        "native/binding/binding_conns.cc",
        "native/dp_eal.c",
        "native/dp_port.c",
        "native/dp_worker.c",
        "native/dp_counters.c",
        "native/dp_l2.c",
        "native/dp_ipv4.c",
        "native/dp_arp.c",
        "native/dp_tables.c",
        "native/dp_ctl.c",
        "native/dp_ctl_addr.c",
        "native/dp_ctl_route.c",
        "native/dp_ctl_neigh.c",
        "native/dp_ctl_lip.c",
        "native/dp_ctl_service.c",
        "native/dp_sched.c",
        "native/dp_conn.c",
        "native/dp_xmit.c",
        "native/dp_fnat.c",
        "native/dp_caddr.c",
        "native/dp_tcp.c",
        "native/dp_udp.c",
        "native/dp_icmp.c",
        "native/dp_events.c",
        "native/dp_siphash.c",
        "native/dp_synproxy.c",
        "native/dp_kni.c",
        "native/dp_event_wire.c"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "ALLOW_EXPERIMENTAL_API",
        "_GNU_SOURCE"
      ],
      "cflags": [
        "<!@(pkg-config --cflags libdpdk)",
        "-O3",
        "-fvisibility=hidden",
        "-flto=auto",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter"
      ],
      "cflags_c": ["-std=gnu11"],
      "cflags_cc": ["-std=gnu++17"],
      "cflags!": ["-fno-exceptions"],
      "ldflags": ["-O3", "-flto=auto"],
      "libraries": ["<!@(pkg-config --libs libdpdk)"]
    }
  ]
}

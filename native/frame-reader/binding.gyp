{
  "targets": [
    {
      "target_name": "frame_reader",
      "sources": ["frame_reader.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}

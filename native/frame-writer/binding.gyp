{
  "targets": [
    {
      "target_name": "frame_writer",
      "sources": ["frame_writer.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}

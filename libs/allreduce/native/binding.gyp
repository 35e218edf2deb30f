{
  "targets": [
    {
      "target_name": "ringtrain_reduce",
      "sources": ["ringtrain_reduce.c"],
      "conditions": [["OS=='linux'", { "sources": ["shared_memory.c"] }]],
      "cflags": ["-O3", "-std=c11", "-fno-trapping-math"]
    }
  ]
}

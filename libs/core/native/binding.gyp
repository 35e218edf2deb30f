{
  "targets": [
    {
      "target_name": "ringtrain_blas",
      "sources": ["ringtrain_blas.c", "direct_conv.c"],
      "cflags": ["-O3", "-std=gnu11"],
      "libraries": ["-lopenblas"]
    }
  ]
}

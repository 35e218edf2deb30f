{
  "targets": [
    {
      "target_name": "ringtrain_blas",
      "sources": ["ringtrain_blas.c", "direct_conv.c", "transformer.c", "fixed_point.c"],
      "cflags": ["-O3", "-std=gnu11", "-ffp-contract=off", "-fno-trapping-math"],
      "libraries": ["-lopenblas"]
    }
  ]
}

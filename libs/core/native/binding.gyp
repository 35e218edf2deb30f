{
  "targets": [
    {
      "target_name": "ringtrain_blas",
      "sources": ["ringtrain_blas.c"],
      "cflags": ["-O2", "-std=c11"],
      "libraries": ["-lopenblas"]
    }
  ]
}

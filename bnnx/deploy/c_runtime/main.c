/* Example program for a bnnx C export: `infer INPUTS.bin` reads raw little-endian float32 inputs
 * (N x H x W x C, N from the file size) and prints one line per example, its logits separated
 * by spaces (%.9g: float32 values round-trip). Built with -DBNNX_DEBUG, it first prints each
 * binary layer's integer sums as "# LAYER v v ...". */
#include <stdio.h>
#include <stdlib.h>

#include "bnnx_model.h"

static uint64_t arena[(BNNX_ARENA_BYTES + 7) / 8];
static float logits[BNNX_NUM_CLASSES];

#ifdef BNNX_DEBUG
void bnnx_debug_dump(const char *layer, const int32_t *sums, int32_t count) {
  printf("# %s", layer);
  for (int32_t i = 0; i < count; ++i) printf(" %ld", (long)sums[i]);
  printf("\n");
}
#endif

static float little_endian(const unsigned char *b) {
  uint32_t bits = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}

int main(int argc, char **argv) {
  static unsigned char bytes[BNNX_INPUT_SIZE * 4];
  static float input[BNNX_INPUT_SIZE];
  if (argc != 2) {
    fprintf(stderr, "usage: %s INPUTS.bin (raw little-endian float32, N x %d x %d x %d)\n", argv[0],
            BNNX_INPUT_H, BNNX_INPUT_W, BNNX_INPUT_C);
    return 2;
  }
  FILE *file = fopen(argv[1], "rb");
  if (!file) {
    fprintf(stderr, "error: cannot open %s\n", argv[1]);
    return 2;
  }
  fseek(file, 0, SEEK_END);
  long size = ftell(file);
  fseek(file, 0, SEEK_SET);
  if (size <= 0 || size % (long)sizeof bytes) {
    fprintf(stderr, "error: %s holds %ld bytes, not a multiple of one example's %ld (%d float32)\n", argv[1], size,
            (long)sizeof bytes, BNNX_INPUT_SIZE);
    fclose(file);
    return 2;
  }
  for (long n = 0; n < size / (long)sizeof bytes; ++n) {
    if (fread(bytes, 1, sizeof bytes, file) != sizeof bytes) {
      fprintf(stderr, "error: could not read example %ld of %s\n", n, argv[1]);
      fclose(file);
      return 2;
    }
    for (int i = 0; i < BNNX_INPUT_SIZE; ++i) input[i] = little_endian(bytes + 4 * i);
    bnnx_model_run(input, logits, arena);
    for (int i = 0; i < BNNX_NUM_CLASSES; ++i) printf(i ? " %.9g" : "%.9g", logits[i]);
    printf("\n");
  }
  fclose(file);
  return 0;
}

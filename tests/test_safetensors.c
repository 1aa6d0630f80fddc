/* safetensors reader: the tensors must tile the data section (no overlap,
 * gap or trailing bytes) and the header stay under the format's limit, as
 * the format's own library requires; each refusal names the file, the
 * tensor and the problem. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "formats/safetensors.h"

static char tmp[64];

/* A file of header JSON `h` (length-prefixed) and `data` bytes of zeros;
 * opened, its message compared with "PATH: " + want (NULL: must open). */
static void expect(const char *h, size_t data, uint64_t hlen_override, const char *want)
{
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return;
    uint64_t n = hlen_override ? hlen_override : strlen(h);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    fwrite(len, 1, 8, fp);
    fwrite(h, 1, strlen(h), fp);
    for (size_t i = 0; i < data; i++) fputc(0, fp);
    fclose(fp);
    slm_error err = {0};
    slm_safetensors *f = slm_safetensors_open(tmp, &err);
    char full[600];
    snprintf(full, sizeof full, "%s: %s", tmp, want ? want : "");
    if (want) CHECK(!f && !strcmp(err.msg, full), "want '%s', got '%s'", full, err.msg);
    else CHECK(f != NULL, "%s: %s", h, err.msg);
    slm_safetensors_close(f);
}


int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/slm-st-%d", (int)getpid());
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, 0, NULL);
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0,
           "tensor 'b': data_offsets [4, 12] overlap tensor 'a', which ends at 8");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, 0,
           "tensor 'b': data_offsets [8, 12] leave bytes 4..7 of the data section to no tensor");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 6, 0,
           "the data section has 6 bytes, the tensors hold 4");
    /* an empty tensor where the next one begins: data order is (begin, end) */
    expect("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 4, 0, NULL);
    expect("{}", 0, (uint64_t)100000001, "header length 100000001 is over the format's limit of 100000000 bytes");
    unlink(tmp);
    return check_summary();
}

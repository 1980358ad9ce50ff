/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord files use
 * it (common/io/tfevents.h). Table-driven, one byte at a time: event files are
 * small, so no hardware instruction is needed. */
#ifndef DDPM_CRC32C_H
#define DDPM_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC of n more bytes after `crc` (0 to start): crc32c(crc32c(0, a), b) equals
 * the CRC of a followed by b. crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t crc32c(uint32_t crc, const void *data, size_t n);

/* TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8, so that a CRC
 * stored inside CRC'd data does not disturb the outer one. */
static inline uint32_t crc32c_mask(uint32_t crc) {
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

#endif

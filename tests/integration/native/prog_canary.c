/* Writes a 32-byte random secret straight into a large (redirected) allocation, then
 * touches three times the budget elsewhere so that the secret's page is evicted. Prints
 * "SECRET <hex>" and "READY", then waits until stdin closes, so that the test can scan
 * the process's present memory for the secret meanwhile. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

int main(int argc, char **argv)
{
    size_t pressure = (argc > 1 ? strtoul(argv[1], NULL, 10) : 8) << 20;
    unsigned char *block = malloc(4 << 20);
    if (!block || getrandom(block + 12345, 32, 0) != 32) return 2;
    printf("SECRET ");
    for (int i = 0; i < 32; i++) printf("%02x", block[12345 + i]);
    printf("\n");
    unsigned char *other = malloc(pressure);
    if (!other) return 2;
    for (size_t i = 0; i < pressure; i += 4096) other[i] = (unsigned char)i | 1;
    printf("READY\n");
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof line, stdin)) {}
    /* Keep both alive to the end. */
    return block[12345] == 0 && other[0] == 0 ? 3 : 0;
}

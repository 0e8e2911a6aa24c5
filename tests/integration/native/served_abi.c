/*
 * Prints the layout of the messages between a served process and the custodian
 * (src/Interposer/native/served_protocol.h), one "name value" per line, for
 * ServedProtocolAbiTests: the custodian's C# mirrors (src/Core/Custodian/ServedProtocol.cs)
 * must match what gcc makes of the header the served side is built with.
 */
#include <stddef.h>
#include <stdio.h>
#include "served_protocol.h"

#define SIZE(s) printf("sizeof_%s %zu\n", #s, sizeof(struct s))
#define OFFSET(s, f) printf("offsetof_%s.%s %zu\n", #s, #f, offsetof(struct s, f))
#define VALUE(c) printf("%s %llu\n", #c, (unsigned long long)(c))

int main(void)
{
    VALUE(SERVED_MAGIC);
    VALUE(SERVED_VERSION);
    VALUE(SERVED_KIND_SERVE);
    VALUE(SERVED_KIND_API);
    SIZE(served_hello);
    OFFSET(served_hello, pid);
    OFFSET(served_hello, kind);
    OFFSET(served_hello, features);
    SIZE(served_welcome);
    OFFSET(served_welcome, window_pages);
    OFFSET(served_welcome, register_wp);
    SIZE(served_arena);
    OFFSET(served_arena, length);
    SIZE(served_status);
    SIZE(served_take_header);
    SIZE(served_take);
    OFFSET(served_take, pages);
    OFFSET(served_take, slot);
    SIZE(served_taken);
    OFFSET(served_taken, gone);
    OFFSET(served_taken, again);
    return 0;
}

/* Connects to a process's live-statistics socket (the abstract name tibet-stats-PID) and
 * prints how many bytes it answered with. Run as another user, it shows that the
 * statistics go to the same user and root only. Usage: stats_peek PID */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: stats_peek PID\n"); return 2; }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    int length = snprintf(address.sun_path + 1, sizeof address.sun_path - 1, "tibet-stats-%s", argv[1]) + 1;
    if (connect(fd, (struct sockaddr *)&address, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length)) != 0) { perror("connect"); return 1; }
    char buffer[65536];
    long total = 0, n;
    while ((n = read(fd, buffer, sizeof buffer)) > 0) total += n;
    printf("answered %ld bytes\n", total);
    return 0;
}

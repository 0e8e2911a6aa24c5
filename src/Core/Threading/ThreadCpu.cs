using Tibet.Core.Interop;

namespace Tibet.Core.Threading;

/// <summary>
/// The CPU a thread last ran on, from field 39 ("processor") of /proc/TID/stat: for a
/// thread blocked in a page fault, the CPU it faulted on. Read by the serving handler to
/// hand the service over to the handler on that CPU (PageEngine, HandlerPerCpu). Works for
/// a thread of another process too (the custodian's engines): /proc/TID answers for any
/// thread id, listed or not. Allocation-free and malloc-free: the path and the contents go
/// through a buffer of the caller's.
/// </summary>
internal static unsafe class ThreadCpu
{
    /// <summary>Bytes the caller's buffer needs: the path, and a stat line (a 16-byte comm
    /// and 52 numeric fields fit well within it).</summary>
    public const int BufferLength = 1024;

    /// <summary>The CPU <paramref name="tid"/> last ran on, or -1 (gone, unreadable).</summary>
    public static int Of(int tid, byte* buffer)
    {
        if (tid <= 0)
            return -1;
        int length = 0;
        foreach (char c in "/proc/")
            buffer[length++] = (byte)c;
        length += WriteDecimal(tid, buffer + length);
        foreach (char c in "/stat")
            buffer[length++] = (byte)c;
        buffer[length] = 0;
        int fd = Libc.open(buffer, Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (fd < 0)
            return -1;
        nint read = Libc.read(fd, buffer, BufferLength - 1);
        Libc.close(fd);
        return read > 0 ? ProcessorField(buffer, (int)read) : -1;
    }

    /// <summary>Field 39 of a stat line: counted from after the last ')' (the command name,
    /// field 2, may hold spaces and parentheses), where field 3 begins.</summary>
    internal static int ProcessorField(byte* line, int length)
    {
        int at = length - 1;
        while (at >= 0 && line[at] != (byte)')')
            at--;
        if (at < 0)
            return -1;
        int field = 2;
        at++;
        while (at < length)
        {
            while (at < length && line[at] == (byte)' ')
                at++;
            if (at >= length)
                break;
            field++;
            if (field == 39)
            {
                int cpu = 0, digits = 0;
                while (at < length && line[at] >= (byte)'0' && line[at] <= (byte)'9' && digits < 9)
                {
                    cpu = cpu * 10 + (line[at++] - (byte)'0');
                    digits++;
                }
                return digits > 0 ? cpu : -1;
            }
            while (at < length && line[at] != (byte)' ')
                at++;
        }
        return -1;
    }

    private static int WriteDecimal(int value, byte* destination)
    {
        int digits = 0;
        for (int rest = value; rest > 0; rest /= 10)
            digits++;
        for (int i = digits - 1; i >= 0; i--, value /= 10)
            destination[i] = (byte)('0' + value % 10);
        return digits;
    }
}

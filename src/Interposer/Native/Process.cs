using System.Runtime.InteropServices;

namespace Tibet.Interposer.Native;

/// <summary>Process-level libc calls the interposer makes.</summary>
internal static partial class ProcessCalls
{
    /// <summary>https://man7.org/linux/man-pages/man3/unsetenv.3.html</summary>
    [LibraryImport("libc", EntryPoint = "unsetenv", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int unsetenv(string name);

    /// <summary>https://man7.org/linux/man-pages/man2/readlink.2.html</summary>
    [LibraryImport("libc", EntryPoint = "readlink", StringMarshalling = StringMarshalling.Utf8)]
    public static unsafe partial nint readlink(string path, byte* buffer, nuint size);

    /// <summary>https://man7.org/linux/man-pages/man3/setenv.3.html</summary>
    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int setenv(string name, string value, int overwrite);

    /// <summary>https://man7.org/linux/man-pages/man2/_exit.2.html</summary>
    [LibraryImport("libc", EntryPoint = "_exit")]
    public static partial void _exit(int status);

    /// <summary>Writes one line where tibet reports (the program's original stderr, kept
    /// open above the descriptors programs use: see <see cref="Shim.Report"/>), without the
    /// managed Console, which would set up terminal handling inside the host program.</summary>
    public static unsafe void WriteError(string line)
    {
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(line + "\n");
        fixed (byte* p = bytes)
            Shim.Report(p, (nuint)bytes.Length);
    }
}

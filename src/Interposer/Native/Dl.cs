using System.Runtime.InteropServices;

namespace Tibet.Interposer.Native;

/// <summary>The dynamic linker, for loading our private libsodium.</summary>
/// <remarks>Not in Core's <see cref="Tibet.Core.Interop.Libc"/>: the dl* functions are the
/// dynamic linker's API (libdl, folded into libc by glibc 2.34, hence the "libc" name), they
/// call malloc, and only the interposer's start (<see cref="SodiumLoader"/>) uses them.</remarks>
internal static unsafe partial class Dl
{
    public const int RTLD_NOW = 0x2;
    public const int RTLD_LOCAL = 0;
    public const int RTLD_DEEPBIND = 0x8;

    [StructLayout(LayoutKind.Sequential)]
    public struct DlInfo
    {
        public byte* dli_fname;
        public nint dli_fbase;
        public byte* dli_sname;
        public nint dli_saddr;
    }

    /// <summary>https://man7.org/linux/man-pages/man3/dlopen.3.html</summary>
    [LibraryImport("libc", EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint dlopen(string path, int flags);

    /// <summary>https://man7.org/linux/man-pages/man3/dlerror.3.html</summary>
    [LibraryImport("libc", EntryPoint = "dlerror")]
    public static partial byte* dlerror();

    /// <summary>https://man7.org/linux/man-pages/man3/dladdr.3.html</summary>
    [LibraryImport("libc", EntryPoint = "dladdr")]
    public static partial int dladdr(void* address, DlInfo* info);
}

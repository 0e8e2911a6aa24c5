using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>The user database (pwd.h) and switching users (unistd.h, grp.h), for tibet-run --user.
/// Both may call malloc (NSS); never on the fault path.</summary>
internal static unsafe partial class Libc
{
    /// <summary>struct passwd (x86_64).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Passwd
    {
        public byte* Name;
        public byte* Password;
        public uint Uid;
        public uint Gid;
        public byte* Gecos;
        public byte* Directory;
        public byte* Shell;
    }

    // https://man7.org/linux/man-pages/man3/getpwnam_r.3.html
    [LibraryImport(Library, EntryPoint = "getpwnam_r", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int getpwnam_r(string name, Passwd* pwd, byte* buf, nuint buflen, Passwd** result);

    // https://man7.org/linux/man-pages/man3/initgroups.3.html
    [LibraryImport(Library, EntryPoint = "initgroups", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int initgroups(string user, uint group);

    /// <summary>glibc's setgid and setuid apply to every thread of the process (the
    /// runtime's too), as POSIX requires.</summary>
    // https://man7.org/linux/man-pages/man2/setgid.2.html
    [LibraryImport(Library, EntryPoint = "setgid", SetLastError = true)]
    public static partial int setgid(uint gid);

    // https://man7.org/linux/man-pages/man2/setuid.2.html
    [LibraryImport(Library, EntryPoint = "setuid", SetLastError = true)]
    public static partial int setuid(uint uid);

    /// <summary>The uid and gid of user <paramref name="name"/>, or null if there is none.</summary>
    public static (uint Uid, uint Gid)? FindUser(string name)
    {
        Passwd entry;
        Passwd* found;
        byte* buffer = stackalloc byte[16384];
        return getpwnam_r(name, &entry, buffer, 16384, &found) == 0 && found != null ? (entry.Uid, entry.Gid) : null;
    }
}

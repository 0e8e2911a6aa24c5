using System.Globalization;
using Tibet.Core.Interop;
using Tibet.Core.Paging;

// tibet-run runs on Linux only (userfaultfd, LD_PRELOAD, /proc).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace Tibet.Launcher;

/// <summary>
/// tibet-run --user NAME: COMMAND runs as NAME, while tibet-run and the custodian keep
/// their own (root) credentials. What NAME needs to run on encrypted RAM is handed over
/// here: userfaultfd through a descriptor of /dev/userfaultfd opened as root (the kernel
/// checks the device's permission at open; whoever holds the descriptor may create
/// userfaultfds for itself), the interposer where NAME can load it, and the statistics
/// directory.
/// </summary>
internal static class OtherUser
{
    /// <summary>Checks that tibet-run may switch users, that NAME exists, and that NAME can
    /// reach the interposer library (ld.so would silently skip a preload it cannot open,
    /// and the program would run unencrypted).</summary>
    public static bool TryResolve(string name, string library, out (uint Uid, uint Gid)? account, out string? problem)
    {
        account = null;
        problem = null;
        if (Libc.geteuid() != 0)
        {
            problem = $"--user {name} needs tibet-run to run as root (it is uid {Libc.geteuid()}); run it with sudo, or without --user as {name} itself";
            return false;
        }
        account = Libc.FindUser(name);
        if (account == null)
        {
            problem = $"--user {name}: there is no user '{name}' on this machine";
            return false;
        }
        if (Unreachable(library) is { } blocked)
        {
            problem = $"--user {name}: {name} cannot load {library}, because {blocked} is not readable or searchable by other users. " +
                      "Install tibet where every user can read it (scripts/build.sh's tree, copied to /opt or /usr/local), or pass --library with such a copy";
            account = null;
            return false;
        }
        return true;
    }

    /// <summary>The first path component (the file or a folder above it) other users
    /// cannot pass, or null.</summary>
    private static string? Unreachable(string path)
    {
        if ((File.GetUnixFileMode(path) & UnixFileMode.OtherRead) == 0)
            return path;
        for (string? folder = Path.GetDirectoryName(path); !string.IsNullOrEmpty(folder); folder = Path.GetDirectoryName(folder))
            if ((File.GetUnixFileMode(folder) & UnixFileMode.OtherExecute) == 0)
                return folder;
        return null;
    }

    /// <summary>Becomes NAME (groups, gid, then uid) just before tibet-run executes the
    /// program; the custodian, started before, keeps root's credentials.</summary>
    public static bool TrySwitchTo(string name, (uint Uid, uint Gid) account, out string? problem)
    {
        problem = null;
        if (Libc.initgroups(name, account.Gid) != 0 || Libc.setgid(account.Gid) != 0 || Libc.setuid(account.Uid) != 0
            || Libc.geteuid() != account.Uid)
        {
            problem = $"--user {name}: cannot become uid {account.Uid} ({Libc.Describe(Libc.LastErrno)}); nothing was started";
            return false;
        }
        return true;
    }

    /// <summary>Opens /dev/userfaultfd for the program (inherited; named in
    /// <see cref="Userfaultfd.DeviceVariable"/>). Returns the descriptor to close once the
    /// program started, or -1 after a line saying that NAME's processes will run
    /// unencrypted unless the machine allows them userfaultfd itself.</summary>
    public static int OpenUserfaultfdDevice(IDictionary<string, string?> environment, string name)
    {
        int device = Libc.open("/dev/userfaultfd", Libc.O_RDWR);
        if (device < 0)
        {
            Console.Error.WriteLine($"tibet-run: cannot open /dev/userfaultfd for {name} ({Libc.Describe(Libc.LastErrno)}); " +
                                    $"{name}'s processes use userfaultfd only if vm.unprivileged_userfaultfd=1, and otherwise run unencrypted, each saying so.");
            return -1;
        }
        environment[Userfaultfd.DeviceVariable] = device.ToString(CultureInfo.InvariantCulture);
        return device;
    }
}

namespace Tibet.IntegrationTests.Support;

internal static class RepoPaths
{
    /// <summary>The checkout's root: the nearest ancestor holding TibetKernel.sln.</summary>
    public static string Root
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "TibetKernel.sln")))
                    return dir.FullName;
            throw new DirectoryNotFoundException("TibetKernel.sln not found above " + AppContext.BaseDirectory);
        }
    }

    /// <summary>Kernel UAPI headers new enough to declare UFFDIO_MOVE and UFFDIO_POISON
    /// (Linux 6.8+), unpacked by scripts/install-deps.sh; Debian 12's own are 6.1.</summary>
    public static string KernelHeaders
    {
        get
        {
            string dir = Path.Combine(Root, ".tools", "linux-headers", "usr", "include");
            if (!File.Exists(Path.Combine(dir, "linux", "userfaultfd.h")))
                throw new FileNotFoundException(
                    "Linux 6.8+ UAPI headers are missing: run scripts/install-deps.sh (it unpacks linux-libc-dev from bookworm-backports into .tools/linux-headers).",
                    Path.Combine(dir, "linux", "userfaultfd.h"));
            return dir;
        }
    }

    /// <summary>Scratch space for test files on the checkout's own file system. /tmp may
    /// be tmpfs, where a file's pages always sit in the page cache, and the GGUF tests
    /// check that a model's pages do not.</summary>
    public static string DiskTemp
    {
        get
        {
            string dir = Path.Combine(Root, ".tools", "tmp");
            Directory.CreateDirectory(dir);
            return dir;
        }
    }
}

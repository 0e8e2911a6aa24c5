using System.Runtime.InteropServices;

namespace Tibet.Core.Interop;

/// <summary>Replacing this process with a program (unistd.h): tibet-run becomes the program
/// it runs. Allocates (the argument arrays); never on the fault path.</summary>
internal static unsafe partial class Libc
{
    // https://man7.org/linux/man-pages/man3/execvpe.3.html
    [LibraryImport(Library, EntryPoint = "execvpe", SetLastError = true)]
    private static partial int execvpe(byte* file, byte** argv, byte** envp);

    /// <summary>Runs <paramref name="command"/> (searched in PATH as a shell would) in this
    /// process, with exactly <paramref name="environment"/>. Returns only on failure, with
    /// the errno.</summary>
    public static int Execute(string[] command, IReadOnlyDictionary<string, string?> environment)
    {
        byte** argv = (byte**)NativeMemory.AllocZeroed((nuint)(command.Length + 1), (nuint)sizeof(byte*));
        for (int i = 0; i < command.Length; i++)
            argv[i] = (byte*)Marshal.StringToCoTaskMemUTF8(command[i]);
        var variables = environment.Where(v => v.Value != null).ToList();
        byte** envp = (byte**)NativeMemory.AllocZeroed((nuint)(variables.Count + 1), (nuint)sizeof(byte*));
        for (int i = 0; i < variables.Count; i++)
            envp[i] = (byte*)Marshal.StringToCoTaskMemUTF8(variables[i].Key + "=" + variables[i].Value);
        execvpe(argv[0], argv, envp);
        int errno = LastErrno;
        for (int i = 0; i < command.Length; i++)
            Marshal.FreeCoTaskMem((nint)argv[i]);
        for (int i = 0; i < variables.Count; i++)
            Marshal.FreeCoTaskMem((nint)envp[i]);
        NativeMemory.Free(argv);
        NativeMemory.Free(envp);
        return errno;
    }
}

namespace Tibet.Core.Interop;

/// <summary>
/// Every libc function tibet calls, in one class: the engine, the audit log, the identity
/// files, the launcher (tibet-run) and the interposer (libtibet.so) all call through it.
/// </summary>
/// <remarks>
/// <para>One native function family per file (Libc.Mmap.cs, Libc.Open.cs, ...), as
/// dotnet/runtime's <c>Interop.Sys</c> is laid out; the constants of a family live beside
/// its functions. Each import names its man page, and follows the C prototype so that the
/// two read side by side. tests/integration/Abi compares the structs and constants with
/// what gcc reads from glibc's headers.</para>
/// <para>Arguments are blittable (pointers, integers, blittable structs), so no import
/// allocates managed memory except those taking a <see cref="string"/>, which are never
/// called on the fault path. Imports whose errno callers read declare
/// <c>SetLastError = true</c>, and the error is read with <see cref="LastErrno"/>.</para>
/// <para>Which functions may run on the fault path (no malloc inside libc) is said per
/// family: <c>setenv</c> and <c>unsetenv</c> (Libc.Environment.cs) allocate, and
/// everything taking a string may.</para>
/// <para>Native code that is not libc stays beside its caller, one file per library:
/// the interposer's C shim (src/Interposer/Native/Shim.cs), the dynamic linker
/// (src/Interposer/Native/Dl.cs) and the host's allocator
/// (src/Interposer/Native/HostAllocator.cs).</para>
/// </remarks>
internal static unsafe partial class Libc
{
    private const string Library = "libc";
}

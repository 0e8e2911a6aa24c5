using System.Runtime.InteropServices;
namespace Tibet.Interposer;
internal static class Exports
{
    [UnmanagedCallersOnly(EntryPoint = "tibet_managed_ping")]
    private static int Ping() => 42;
}

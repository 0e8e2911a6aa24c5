using System.Runtime.InteropServices;
using Tibet.Core.Custodian;
using Tibet.IntegrationTests.Support;
using Xunit;

namespace Tibet.IntegrationTests.Abi;

/// <summary>
/// The custodian's mirrors of the messages it exchanges with a served process
/// (src/Core/Custodian/ServedProtocol.cs) equal what gcc makes of the C header the served
/// side is built with (src/Interposer/native/served_protocol.h).
/// </summary>
public unsafe class ServedProtocolAbiTests
{
    [Fact]
    public void The_custodians_messages_match_the_served_sides_header()
    {
        var fromHeader = HeaderValues.Compile("served_abi.c", "-I", Path.Combine(RepoPaths.Root, "src", "Interposer", "native"));
        var ours = new Dictionary<string, ulong>
        {
            ["SERVED_MAGIC"] = ServedProtocol.Magic,
            ["SERVED_VERSION"] = ServedProtocol.Version,
            ["SERVED_KIND_SERVE"] = ServedProtocol.KindServe,
            ["SERVED_KIND_API"] = ServedProtocol.KindApi,
            ["sizeof_served_hello"] = (ulong)sizeof(ServedHello),
            ["offsetof_served_hello.pid"] = (ulong)Marshal.OffsetOf<ServedHello>(nameof(ServedHello.Pid)),
            ["offsetof_served_hello.kind"] = (ulong)Marshal.OffsetOf<ServedHello>(nameof(ServedHello.Kind)),
            ["offsetof_served_hello.features"] = (ulong)Marshal.OffsetOf<ServedHello>(nameof(ServedHello.Features)),
            ["sizeof_served_welcome"] = (ulong)sizeof(ServedWelcome),
            ["offsetof_served_welcome.window_pages"] = (ulong)Marshal.OffsetOf<ServedWelcome>(nameof(ServedWelcome.WindowPages)),
            ["offsetof_served_welcome.register_wp"] = (ulong)Marshal.OffsetOf<ServedWelcome>(nameof(ServedWelcome.RegisterWriteProtect)),
            ["sizeof_served_arena"] = (ulong)sizeof(ServedArena),
            ["offsetof_served_arena.length"] = (ulong)Marshal.OffsetOf<ServedArena>(nameof(ServedArena.Length)),
            ["sizeof_served_status"] = (ulong)sizeof(ServedStatus),
            ["sizeof_served_take_header"] = (ulong)sizeof(ServedTakeHeader),
            ["sizeof_served_take"] = (ulong)sizeof(ServedTake),
            ["offsetof_served_take.pages"] = (ulong)Marshal.OffsetOf<ServedTake>(nameof(ServedTake.Pages)),
            ["offsetof_served_take.slot"] = (ulong)Marshal.OffsetOf<ServedTake>(nameof(ServedTake.Slot)),
            ["sizeof_served_taken"] = (ulong)sizeof(ServedTaken),
            ["offsetof_served_taken.gone"] = (ulong)Marshal.OffsetOf<ServedTaken>(nameof(ServedTaken.Gone)),
            ["offsetof_served_taken.again"] = (ulong)Marshal.OffsetOf<ServedTaken>(nameof(ServedTaken.Again)),
        };
        HeaderValues.AssertSame(fromHeader, ours);
    }
}

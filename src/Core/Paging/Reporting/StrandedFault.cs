using Tibet.Core.Paging.AddressSpace;

namespace Tibet.Core.Paging.Reporting;

/// <summary>A fault read but not answered when the handler failed: it gets SIGBUS (see
/// PageEngine, "Failure policy"). <see cref="Pid"/> 0: this process.</summary>
internal readonly record struct StrandedFault(AddressSpaceOps? Space, ulong Address, uint ThreadId, int Pid);

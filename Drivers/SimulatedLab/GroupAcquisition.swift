import Foundation
import HeraldCore

/// Several taggers watching the same detectors over the same stretch of lab time (an
/// `acquire` step naming several). The stretch is simulated once and each member reads
/// its share: two taggers must see the same photons, not two independent draws, and the
/// lab clock must move on once, not once per tagger.
struct GroupAcquisition {
    var members: Int
    var joined = 0
    var startPs: Int64
    var waiting: [CheckedContinuation<Int64, any Error>] = []
    var cancelled = false
    /// Simulated chunks not yet read by every member, oldest first.
    var journal: [DetectorClicks] = []
    var simulatedUntilPs: Int64
    /// How far each member has read, by name; a member that left is removed.
    var cursors: [String: Int64] = [:]
}

extension SimulatedLab {
    /// A simulated tagger of this lab, by its device name: a group's members that live here
    /// are the ones its barrier waits for (the others are on other labs, or real).
    public nonisolated func registerTagger(_ name: String) {
        taggerNames.withLock { _ = $0.insert(name) }
    }

    /// How many of a group's members are this lab's taggers.
    public nonisolated func membersHere(_ group: AcquisitionGroup) -> Int {
        taggerNames.withLock { names in group.members.filter { names.contains($0) }.count }
    }

    /// Joins the group acquisition `id` of `members` taggers and waits until all have
    /// joined, so they start at one instant: the first to join fixes it.
    public func joinGroup(_ id: UUID, members: Int, member: String) async throws -> Int64 {
        var group = groups[id] ?? GroupAcquisition(members: members, startPs: nowPs, simulatedUntilPs: nowPs)
        if group.cancelled { throw CancellationError() }
        group.joined += 1
        group.cursors[member] = group.startPs
        if group.joined >= group.members {
            let start = group.startPs
            for c in group.waiting { c.resume(returning: start) }
            group.waiting = []
            groups[id] = group
            return start
        }
        groups[id] = group
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    if groups[id]?.cancelled ?? true {
                        continuation.resume(throwing: CancellationError())
                    } else {
                        groups[id]?.waiting.append(continuation)
                    }
                }
            } onCancel: {
                Task { await self.cancelGroup(id) }
            }
        } catch {
            // Never started: it will not leave, so it goes now.
            leaveGroup(id, member: member)
            throw error
        }
    }

    /// A member that failed or was cancelled before the others joined releases them.
    public func cancelGroup(_ id: UUID) {
        guard var group = groups[id] else { return }
        group.cancelled = true
        for c in group.waiting { c.resume(throwing: CancellationError()) }
        group.waiting = []
        groups[id] = group
    }

    /// The clicks over [from, to) for one member: simulated by whichever member reaches
    /// that time first, kept until every member has read past it.
    public func groupClicks(_ id: UUID, member: String, fromPs from: Int64, toPs to: Int64) async throws -> DetectorClicks {
        guard var group = groups[id] else {
            throw DeviceError(device: member, .rejected, "acquires in a group the simulated lab does not know")
        }
        var advance: Int64 = 0
        if to > group.simulatedUntilPs {
            group.journal.append(simulate(fromPs: group.simulatedUntilPs, toPs: to))
            // The clock moves by what was simulated, whoever sleeps it (with real-time pacing
            // two members' sleeps overlap; each must add only its own stretch).
            advance = to - group.simulatedUntilPs
            group.simulatedUntilPs = to
        }
        var out = [[Int64]](repeating: [], count: 4)
        for chunk in group.journal where chunk.stopPs > from && chunk.startPs < to {
            // Members read the chunks as simulated; a member whose read a fault cut short
            // filters (a detector's clicks are sorted only with dead time modelled).
            let whole = chunk.startPs >= from && chunk.stopPs <= to
            for d in 0..<min(4, chunk.perDetector.count) {
                if whole {
                    out[d].append(contentsOf: chunk.perDetector[d])
                } else {
                    out[d].append(contentsOf: chunk.perDetector[d].lazy.filter { $0 >= from && $0 < to })
                }
            }
        }
        group.cursors[member] = to
        group.journal.removeAll { $0.stopPs <= (group.cursors.values.min() ?? .max) }
        groups[id] = group
        // The clock moves once per stretch, with the member that simulated it; the journal is
        // updated first, so a member that runs while this one sleeps reads it rather than re-simulating.
        if advance > 0 {
            try await self.advance(by: Duration(secondsComponent: 0, attosecondsComponent: advance * 1_000_000))
        }
        return DetectorClicks(startPs: from, stopPs: to, perDetector: out)
    }

    /// A member is done (finished, failed or cancelled); the last one ends the group.
    public func leaveGroup(_ id: UUID, member: String) {
        guard var group = groups[id] else { return }
        group.cursors[member] = nil
        if group.cursors.isEmpty && group.waiting.isEmpty {
            groups[id] = nil
        } else {
            group.journal.removeAll { $0.stopPs <= (group.cursors.values.min() ?? .max) }
            groups[id] = group
        }
    }
}

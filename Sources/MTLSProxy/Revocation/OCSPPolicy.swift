/// What the OCSP answers about a chain mean for the client, under `ocsp_policy`: free of
/// sockets and GnuTLS so that unit tests drive every case.
enum OCSPPolicy {
    enum Decision: Equatable {
        /// Go on. `note` is what the connection's log line says about OCSP.
        case pass(note: String)
        case refuse(RefusalReason, detail: String)
    }

    /// One certificate asked about: its serial (for the log) and what came back.
    struct Checked {
        var serial: String
        var outcome: Result<OCSPAnswer, OCSPFailure>
        var cached = false
    }

    /// A revoked answer refuses under both policies, and wins over everything else;
    /// under `strict`, `unknown` refuses as `ocsp_unknown` and no usable answer as
    /// `ocsp_unavailable`; under `best-effort` those pass, and the note says so.
    static func decide(_ checked: [Checked], policy: CRLPolicy) -> Decision {
        for item in checked {
            if case .success(let answer) = item.outcome, answer.status == .revoked {
                return .refuse(.revoked, detail: "OCSP: serial \(item.serial) is revoked")
            }
        }
        var problems: [(RefusalReason, String)] = []
        for item in checked {
            switch item.outcome {
            case .success(let answer) where answer.status == .unknown:
                problems.append((.ocspUnknown, "OCSP: the responder does not know serial \(item.serial)"))
            case .failure(let failure):
                problems.append((.ocspUnavailable, "OCSP for serial \(item.serial): \(failure)"))
            default:
                break
            }
        }
        if let first = problems.first {
            if policy == .strict { return .refuse(first.0, detail: first.1) }
            return .pass(note: "\(first.0.rawValue), allowed (best-effort): \(problems.map(\.1).joined(separator: "; "))")
        }
        let cached = checked.allSatisfy(\.cached) ? " (cached)" : ""
        return .pass(note: "good\(cached)")
    }
}

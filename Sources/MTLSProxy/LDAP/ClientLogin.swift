/// Who a connection's requests run as on the backend, and what becomes of each request
/// so that this stays true (`client_auth`). The backend connection is bound as the
/// proxy; requests carry a proxied authorization control (RFC 4370) naming the identity
/// they run as, which the proxy alone decides:
///
/// - a SASL EXTERNAL bind is answered by the proxy: success when its authzId is empty or
///   names the certificate's entry (compared as DNs), otherwise a failure, after which
///   the connection is anonymous (RFC 4511 §4.2.1: a failed bind leaves it so);
/// - an anonymous simple bind is answered by the proxy: requests run as anonymous;
/// - any other bind is passed on under `sasl-external` (the backend judges it and the
///   connection then runs as whatever the backend decided, with no control), and refused
///   with inappropriateAuthentication under `certificate`;
/// - a request that brings its own proxied authorization control is refused and never
///   forwarded: otherwise any client could act as anyone the proxy may act for.
///
/// Pure logic: the relay carries out the steps.
package struct ClientLogin {
    package enum RunsAs: Equatable {
        case anonymous
        /// The certificate's entry.
        case entry
        /// A bind of the client's own, passed on: the backend knows the outcome.
        case ownBind(name: String)
    }

    package enum Step: Equatable {
        /// Bytes for the backend.
        case forward([UInt8])
        /// A response the proxy writes to the client itself.
        case answer([UInt8])
        /// The backend connection holds a client's own bind: bind it as the proxy again
        /// (with this messageID, whose response the relay takes out of the stream), then answer.
        case rebindThenAnswer(messageID: Int, answer: [UInt8])
        /// Nothing goes anywhere (an abandon the proxy refuses has no response).
        case drop
    }

    package let mode: ClientAuth
    /// The DN of the certificate's entry (`cert_map`).
    package let entryDN: String
    /// `dn:` + entryDN, made once: every forwarded request carries it.
    private let entryAuthzId: String
    package private(set) var runsAs: RunsAs
    /// Whether the backend connection is bound as the proxy: false once a client's own
    /// bind was passed on, true again after the proxy's rebind.
    var backendIsProxy = true

    package init(mode: ClientAuth, entryDN: String) {
        self.mode = mode
        self.entryDN = entryDN
        entryAuthzId = "dn:" + entryDN
        runsAs = mode == .certificate ? .entry : .anonymous
    }

    /// The identity for the log line: `dn:...`, `anonymous`, or the client's own bind.
    var authzDescription: String {
        switch runsAs {
        case .anonymous: return "anonymous"
        case .entry: return "dn:" + entryDN
        case .ownBind(let name): return "bind:" + (name.isEmpty ? "(empty)" : name)
        }
    }

    /// What becomes of one request; `message` is its bytes as the client sent them.
    package mutating func step(_ request: LDAPRequest, message: [UInt8]) -> Step {
        if request.operation == .extended && request.extendedName == LDAPRequest.startTLSName {
            return answer(request, .operationsError, "TLS is already established on this connection")
        }
        if mode == .none { return .forward(request.reencoded()) }
        if request.claimsProxiedAuthorization && request.operation != .unbind {
            if request.operation == .abandon { return .drop }
            return answer(request, .unwillingToPerform, "the proxied authorization control is the proxy's own: a client may not send it")
        }
        switch request.operation {
        case .bind: return bind(request, request.bind!, message: message)
        // Controls on an unbind mean nothing, and the client's own proxied authorization
        // control must not go on: an unbind always goes without any.
        case .unbind: return .forward(request.reencoded(keepingControls: false))
        case .abandon: return .forward(request.reencoded())
        default: break
        }
        switch runsAs {
        case .entry: return .forward(request.withProxiedAuthorization(entryAuthzId))
        case .anonymous: return .forward(request.withProxiedAuthorization(""))
        case .ownBind: return .forward(request.reencoded())
        }
    }

    private mutating func bind(_ request: LDAPRequest, _ bind: LDAPRequest.Bind, message: [UInt8]) -> Step {
        guard bind.version == 3 else {
            runsAs = .anonymous  // a failed bind (RFC 4511 §4.2.1)
            return proxyAnswers(request, .protocolError, "only LDAP version 3 is served")
        }
        switch bind.authentication {
        case .sasl(let mechanism, let credentials) where mechanism.uppercased() == "EXTERNAL":
            let authzId = String(decoding: credentials ?? [], as: UTF8.self)
            // RFC 4513 §5.2.1.8 / RFC 4422: "dn:" is case-insensitive, and the DN is compared as a DN.
            let namesEntry = authzId.prefix(3).lowercased() == "dn:" && DistinguishedName.same(String(authzId.dropFirst(3)), entryDN)
            if authzId.isEmpty || namesEntry {
                runsAs = .entry
                return proxyAnswers(request, .success, "")
            }
            runsAs = .anonymous
            return proxyAnswers(request, .insufficientAccessRights,
                                "authzId '\(authzId)' is not the identity of the client certificate (dn:\(entryDN))")
        case .simple where bind.isAnonymous:
            runsAs = .anonymous
            return proxyAnswers(request, .success, "")
        default:
            guard mode == .saslExternal else {
                runsAs = .anonymous
                return answer(request, .inappropriateAuthentication, "the client certificate is the login here: bind with SASL EXTERNAL or not at all")
            }
            runsAs = .ownBind(name: bind.name)
            backendIsProxy = false
            return .forward(request.reencoded())
        }
    }

    /// A bind the proxy answers: the backend connection must be the proxy's again first.
    private func proxyAnswers(_ request: LDAPRequest, _ code: LDAPResponse.ResultCode, _ diagnostic: String) -> Step {
        let response = LDAPResponse.result(to: request, code, diagnostic)!
        return backendIsProxy ? .answer(response) : .rebindThenAnswer(messageID: request.messageID, answer: response)
    }

    private func answer(_ request: LDAPRequest, _ code: LDAPResponse.ResultCode, _ diagnostic: String) -> Step {
        LDAPResponse.result(to: request, code, diagnostic).map(Step.answer) ?? .drop
    }
}

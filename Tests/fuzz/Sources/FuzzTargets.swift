// Every fuzz target, by the name that scripts/fuzz takes. Adding one: a file with a
// function `([UInt8]) -> Void` that feeds the bytes to a parser and checks what it can,
// one line here, and a seed corpus in Tests/fuzz/corpus/NAME/.
let fuzzTargets: [String: @Sendable ([UInt8]) -> Void] = [
    "config": fuzzConfig,
    "crl": fuzzCRLFile,
    "http-head": fuzzHTTPHead,
    "http-reply": fuzzHTTPReply,
    "ldap-decode": fuzzLDAPDecode,
    "ldap-filter": fuzzLDAPFilter,
    "ldap-framer": fuzzLDAPFramer,
    "ldap-request": fuzzLDAPRequest,
    "proxy-v2": fuzzProxyV2,
    "proxy-header": fuzzProxyHeader,
]

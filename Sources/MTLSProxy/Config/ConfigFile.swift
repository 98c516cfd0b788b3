/// Reads a config file (a thin name over FileBytes, for the command line).
public enum ConfigFile {
    public static func read(_ path: String) throws(SystemError) -> [UInt8] {
        try FileBytes.read(path)
    }
}

public enum MTLSProxyVersion {
    public static let string = "0.1.0"
}

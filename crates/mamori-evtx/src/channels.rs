//! Windows event log channel → Sigma `service`, from the Sigma taxonomy appendix
//! (sigma-specification, "Windows" → "Service"), plus `PowerShellCore/Operational`, which
//! carries the same events as `Microsoft-Windows-PowerShell/Operational` (pySigma maps both),
//! and the few channels noted below.

/// (channel, service). Channels compare without regard to case: exports differ in case.
const CHANNEL_SERVICES: &[(&str, &str)] = &[
    ("Application", "application"),
    ("Microsoft-Windows-Application-Experience/Program-Telemetry", "application-experience"),
    ("Microsoft-Windows-Application-Experience/Program-Compatibility-Assistant", "application-experience"),
    ("Microsoft-Windows-AppLocker/MSI and Script", "applocker"),
    ("Microsoft-Windows-AppLocker/EXE and DLL", "applocker"),
    ("Microsoft-Windows-AppLocker/Packaged app-Deployment", "applocker"),
    ("Microsoft-Windows-AppLocker/Packaged app-Execution", "applocker"),
    ("Microsoft-Windows-AppModel-Runtime/Admin", "appmodel-runtime"),
    ("Microsoft-Windows-AppXDeploymentServer/Operational", "appxdeployment-server"),
    ("Microsoft-Windows-AppxPackaging/Operational", "appxpackaging-om"),
    ("Microsoft-Windows-BitLocker/BitLocker Management", "bitlocker"),
    ("Microsoft-Windows-Bits-Client/Operational", "bits-client"),
    ("Microsoft-Windows-CAPI2/Operational", "capi2"),
    (
        "Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational",
        "certificateservicesclient-lifecycle-system",
    ),
    ("Microsoft-Windows-CodeIntegrity/Operational", "codeintegrity-operational"),
    ("Microsoft-Windows-DHCP-Server/Operational", "dhcp"),
    ("Microsoft-Windows-Diagnosis-Scripted/Operational", "diagnosis-scripted"),
    ("Microsoft-Windows-DNS Client Events/Operational", "dns-client"),
    ("DNS Server", "dns-server"),
    ("Microsoft-Windows-DNS-Server/Analytical", "dns-server-analytic"),
    ("Microsoft-Windows-DNS-Server/Audit", "dns-server-audit"),
    // The channel's name on Windows Server (the taxonomy spells it with a hyphen).
    ("Microsoft-Windows-DNSServer/Audit", "dns-server-audit"),
    ("Microsoft-Windows-DriverFrameworks-UserMode/Operational", "driver-framework"),
    ("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", "firewall-as"),
    ("Microsoft-Windows-Hyper-V-Worker", "hyper-v-worker"),
    ("Microsoft-IIS-Configuration/Operational", "iis-configuration"),
    ("Microsoft-Windows-Kernel-EventTracing", "kernel-event-tracing"),
    ("Microsoft-Windows-Kernel-ShimEngine/Operational", "kernel-shimengine"),
    ("Microsoft-Windows-Kernel-ShimEngine/Diagnostic", "kernel-shimengine"),
    ("Microsoft-Windows-LDAP-Client/Debug", "ldap"),
    ("Microsoft-Windows-LSA/Operational", "lsa-server"),
    ("MSExchange Management", "msexchange-management"),
    ("Microsoft-Windows-Ntfs/Operational", "ntfs"),
    ("Microsoft-Windows-NTLM/Operational", "ntlm"),
    ("OpenSSH/Operational", "openssh"),
    ("Microsoft-Windows-PowerShell/Operational", "powershell"),
    ("PowerShellCore/Operational", "powershell"),
    ("Windows PowerShell", "powershell-classic"),
    ("Microsoft-Windows-PrintService/Admin", "printservice-admin"),
    ("Microsoft-Windows-PrintService/Operational", "printservice-operational"),
    ("Security", "security"),
    ("Microsoft-Windows-Security-Mitigations/Kernel Mode", "security-mitigations"),
    ("Microsoft-Windows-Security-Mitigations/User Mode", "security-mitigations"),
    ("Microsoft-Windows-SENSE/Operational", "sense"),
    ("Microsoft-ServiceBus-Client/Operational", "servicebus-client"),
    ("Microsoft-ServiceBus-Client/Admin", "servicebus-client"),
    ("Microsoft-Windows-Shell-Core/Operational", "shell-core"),
    ("Microsoft-Windows-SmbClient/Security", "smbclient-security"),
    // Used by SigmaHQ rules, not (yet) in the taxonomy appendix.
    ("Microsoft-Windows-SmbServer/Connectivity", "smbserver-connectivity"),
    ("Microsoft-Windows-Sysmon/Operational", "sysmon"),
    ("System", "system"),
    ("Microsoft-Windows-TaskScheduler/Operational", "taskscheduler"),
    (
        "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
        "terminalservices-localsessionmanager",
    ),
    ("Microsoft-Windows-VHDMP/Operational", "vhdmp"),
    ("Microsoft-Windows-Windows Defender/Operational", "windefend"),
    ("Microsoft-Windows-WMI-Activity/Operational", "wmi"),
];

/// The Sigma service of a channel, if the taxonomy names one.
pub fn service_for_channel(channel: &str) -> Option<&'static str> {
    let channel = channel.trim();
    CHANNEL_SERVICES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(channel))
        .map(|(_, service)| *service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taxonomy_services_resolve_case_insensitively() {
        assert_eq!(service_for_channel("Security"), Some("security"));
        assert_eq!(service_for_channel("security"), Some("security"));
        assert_eq!(service_for_channel("Microsoft-Windows-Sysmon/Operational"), Some("sysmon"));
        assert_eq!(service_for_channel("Windows PowerShell"), Some("powershell-classic"));
        assert_eq!(service_for_channel("Setup"), None);
    }
}

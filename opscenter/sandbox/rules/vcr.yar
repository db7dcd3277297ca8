/*
  The center's shipped YARA rules (opscenter/sandbox/rules/): read by the static analyzer
  (opscenter/sandbox/analyzer.py). Each rule's meta "score" (0-100) adds to the file's score and its
  "description" is the reason shown to the operator. Add rules in further .yar files here (or a
  folder named by the center's sandbox_rules setting).
*/

rule VCR_Sandbox_Test_Marker
{
    meta:
        description = "VCR sandbox test marker (a harmless test file built to be judged malicious)"
        score = 100
    strings:
        $m = "VCR-SANDBOX-TEST-MALWARE-7f3c2a"
    condition:
        $m
}

rule Mimikatz_Strings
{
    meta:
        description = "credential theft tool strings (mimikatz)"
        score = 90
    strings:
        $a = "sekurlsa::logonpasswords" ascii wide nocase
        $b = "gentilkiwi" ascii wide
        $c = "mimikatz" ascii wide nocase
    condition:
        2 of them
}

rule Ransom_Note_Strings
{
    meta:
        description = "ransom note text (files encrypted, pay in bitcoin)"
        score = 60
    strings:
        $a = "your files have been encrypted" ascii wide nocase
        $b = "bitcoin" ascii wide nocase
        $c = "decrypt" ascii wide nocase
        $d = ".onion" ascii wide nocase
    condition:
        $a and 1 of ($b, $c, $d)
}

rule Shadow_Copy_Deletion
{
    meta:
        description = "deletes Windows shadow copies (vssadmin / wmic), as ransomware does"
        score = 60
    strings:
        $a = "vssadmin delete shadows" ascii wide nocase
        $b = "shadowcopy delete" ascii wide nocase
        $c = "bcdedit /set {default} recoveryenabled no" ascii wide nocase
    condition:
        any of them
}

rule PowerShell_Download_Cradle
{
    meta:
        description = "PowerShell download-and-run (IEX / DownloadString / encoded command)"
        score = 50
    strings:
        $iex = /(IEX|Invoke-Expression)\s*\(/ nocase ascii wide
        $dl1 = "DownloadString" nocase ascii wide
        $dl2 = "DownloadFile" nocase ascii wide
        $wc = "Net.WebClient" nocase ascii wide
        $enc = /powershell(\.exe)?\s+.{0,40}-e(nc|ncodedcommand)?\s+[A-Za-z0-9+\/=]{40,}/ nocase ascii wide
        $hidden = /-w(indowstyle)?\s+hidden/ nocase ascii wide
    condition:
        $enc or ($iex and ($dl1 or $dl2 or $wc)) or ($hidden and ($dl1 or $dl2))
}

rule LOLBin_Download
{
    meta:
        description = "downloads with Windows built-in tools (certutil -urlcache, bitsadmin, mshta http)"
        score = 40
    strings:
        $a = /certutil(\.exe)?\s+.{0,20}-urlcache/ nocase ascii wide
        $b = /bitsadmin(\.exe)?\s+\/transfer/ nocase ascii wide
        $c = /mshta(\.exe)?\s+https?:/ nocase ascii wide
        $d = /regsvr32(\.exe)?\s+\/s\s+\/n\s+\/u\s+\/i:http/ nocase ascii wide
    condition:
        any of them
}

rule Shell_Download_Pipe
{
    meta:
        description = "shell script piping a download into a shell (curl | sh, wget | sh)"
        score = 40
    strings:
        $a = /(curl|wget)\s[^\n|]{0,200}\|\s*(ba|z|da)?sh/ ascii
        $b = "/dev/tcp/" ascii
    condition:
        any of them
}

rule UPX_Packed
{
    meta:
        description = "packed with UPX"
        score = 15
    strings:
        $a = "UPX0" ascii
        $b = "UPX1" ascii
        $c = "UPX!" ascii
    condition:
        2 of them
}

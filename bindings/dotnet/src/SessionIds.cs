// Session ids of the session format every gardenstate session helper shares
// (bindings/SESSION-FORMAT.md, section 1): 16 to 128 characters of base64url are accepted; a
// new id is 32 bytes from the OS CSPRNG in base64url without padding (43 characters).
using System;
using System.Security.Cryptography;

namespace Gardenstate
{
    public static class SessionIds
    {
        public const int MinLength = 16, MaxLength = 128, NewIdBytes = 32;
        static readonly RandomNumberGenerator rng = RandomNumberGenerator.Create();

        /// <summary>A new session id: 32 random bytes, base64url without padding.</summary>
        public static string New()
        {
            var b = new byte[NewIdBytes];
            lock (rng) rng.GetBytes(b);
            return Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        }

        /// <summary>Whether id is an id of the format (16 to 128 characters of [A-Za-z0-9_-]).</summary>
        public static bool IsValid(string id)
        {
            if (id == null || id.Length < MinLength || id.Length > MaxLength) return false;
            foreach (char c in id)
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
                    return false;
            return true;
        }
    }
}

/* A stand-in bcryptprimitives.dll for running timonel.exe under Wine 8, which lacks
 * ProcessPrng (Rust's std imports it from this DLL for random numbers, e.g. HashMap keys).
 * It forwards to RtlGenRandom (advapi32's SystemFunction036), which Wine has.
 * Only for Wine: Windows 10 and later ship the real DLL; do not copy this one to a Windows
 * machine. scripts/build-windows.sh builds it beside the .exe, where Wine looks first. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}

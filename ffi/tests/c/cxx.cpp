// The header compiles as C++ (-Wall -Wextra -Werror -pedantic) and links: the extern "C"
// guards give the functions C linkage, or this program would not link.
#include "gardenstate.h"

#include <cstdio>
#include <cstring>
#include <string>

#include <unistd.h>

int main() {
    if (gds_abi_version() != GDS_ABI_VERSION || std::string(gds_version()) != GDS_VERSION_STRING) return 1;
    gds_status st = GDS_ERR_NULL_ARGUMENT;
    if (gds_create(nullptr, nullptr, nullptr) != st) return 1;

    std::string name = "gds-cxx-" + std::to_string(getpid());
    gds_options opts;
    std::memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    opts.capacity_bytes = 1 << 20;
    opts.max_value = 1024;
    gds_store *store = nullptr;
    if (gds_open(name.c_str(), &opts, &store) != GDS_OK) return 1;

    const std::string key = "k", value = "from C++";
    uint64_t version = 0;
    if (gds_set(store, reinterpret_cast<const uint8_t *>(key.data()), key.size(),
                reinterpret_cast<const uint8_t *>(value.data()), value.size(), GDS_EXPIRY_NEVER, 0,
                &version) != GDS_OK)
        return 1;
    uint8_t *out = nullptr;
    size_t len = 0;
    gds_meta meta;
    if (gds_get_alloc(store, reinterpret_cast<const uint8_t *>(key.data()), key.size(), &out, &len, &meta) !=
        GDS_OK)
        return 1;
    bool same = std::string(reinterpret_cast<char *>(out), len) == value && meta.version == version;
    gds_buffer_free(out);
    gds_close(store);
    if (gds_destroy(name.c_str()) != GDS_OK || !same) return 1;
    std::printf("cxx: ok\n");
    return 0;
}

// XRT stub for tests: xrt::bo (xrt/xrt_bo.h, XRT 2022.2), the members the host uses.
#ifndef XRT_STUB_XRT_BO_H_
#define XRT_STUB_XRT_BO_H_

#include "xrt.h"

#include <cstdint>
#include <memory>

typedef uint64_t xrtBufferFlags;
typedef uint32_t xrtMemoryGroup;

namespace xrt {

using memory_group = xrtMemoryGroup;

class bo_impl;
class bo {
public:
    enum class flags : uint32_t { normal = 0, cacheable = 1u << 24, device_only = 1u << 28,
                                  host_only = 1u << 29, p2p = 1u << 30, svm = 1u << 27 };

    bo() {}

    XCL_DRIVER_DLLESPEC
    bo(xclDeviceHandle dhdl, void* userptr, size_t sz, bo::flags flags, memory_group grp);

    bo(xclDeviceHandle dhdl, void* userptr, size_t sz, memory_group grp)
        : bo(dhdl, userptr, sz, bo::flags::normal, grp) {}

    XCL_DRIVER_DLLESPEC
    bo(xclDeviceHandle dhdl, size_t size, bo::flags flags, memory_group grp);

    bo(xclDeviceHandle dhdl, size_t size, memory_group grp) : bo(dhdl, size, bo::flags::normal, grp) {}

    XCL_DRIVER_DLLESPEC
    bo(const bo& parent, size_t size, size_t offset);

    bo(const bo& rhs) = default;
    bo& operator=(const bo& rhs) = default;
    bo(bo&& rhs) = default;
    bo& operator=(bo&& rhs) = default;

    explicit operator bool() const { return handle != nullptr; }

    XCL_DRIVER_DLLESPEC
    size_t size() const;

    XCL_DRIVER_DLLESPEC
    uint64_t address() const;

    XCL_DRIVER_DLLESPEC
    void sync(xclBOSyncDirection dir, size_t sz, size_t offset);

    void sync(xclBOSyncDirection dir) { sync(dir, size(), 0); }

    XCL_DRIVER_DLLESPEC
    void* map();

    template <typename MapType>
    MapType map() { return reinterpret_cast<MapType>(map()); }

    XCL_DRIVER_DLLESPEC
    void write(const void* src, size_t size, size_t seek);

    void write(const void* src) { write(src, size(), 0); }

    XCL_DRIVER_DLLESPEC
    void read(void* dst, size_t size, size_t skip);

    void read(void* dst) { read(dst, size(), 0); }

    const std::shared_ptr<bo_impl>& get_handle() const { return handle; }

private:
    std::shared_ptr<bo_impl> handle;
};

}  // namespace xrt

#endif

// XRT stub for tests: xrt::device (xrt/xrt_device.h, XRT 2022.2), the members the host uses.
#ifndef XRT_STUB_XRT_DEVICE_H_
#define XRT_STUB_XRT_DEVICE_H_

#include "xrt.h"
#include "xrt/xrt_uuid.h"

#include <memory>
#include <string>

namespace xrt_core {
class device;
}

namespace xrt {

class device {
public:
    device() = default;
    ~device() = default;

    XCL_DRIVER_DLLESPEC
    explicit device(unsigned int didx);

    XCL_DRIVER_DLLESPEC
    explicit device(const std::string& bdf);

    explicit device(int didx) : device(static_cast<unsigned int>(didx)) {}

    explicit device(std::shared_ptr<xrt_core::device> hdl) : handle(std::move(hdl)) {}

    device(const device& rhs) = default;
    device& operator=(const device& rhs) = default;
    device(device&& rhs) = default;
    device& operator=(device&& rhs) = default;

    XCL_DRIVER_DLLESPEC
    uuid load_xclbin(const std::string& xclbin_fnm);

    XCL_DRIVER_DLLESPEC
    uuid get_xclbin_uuid() const;

    XCL_DRIVER_DLLESPEC
    operator xclDeviceHandle() const;

    std::shared_ptr<xrt_core::device> get_handle() const { return handle; }

    explicit operator bool() const { return handle != nullptr; }

private:
    std::shared_ptr<xrt_core::device> handle;
};

}  // namespace xrt

#endif

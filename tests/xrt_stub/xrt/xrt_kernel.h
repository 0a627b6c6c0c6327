// XRT stub for tests: xrt::run and xrt::kernel (xrt/xrt_kernel.h, XRT 2022.2), the members the host
// uses, with XRT's argument-setting templates.
#ifndef XRT_STUB_XRT_KERNEL_H_
#define XRT_STUB_XRT_KERNEL_H_

#include "ert.h"
#include "xrt.h"
#include "xrt/xrt_bo.h"
#include "xrt/xrt_device.h"
#include "xrt/xrt_uuid.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace xrt {

class kernel;

class run_impl;
class run {
public:
    run() = default;

    XCL_DRIVER_DLLESPEC
    explicit run(const kernel& krnl);

    XCL_DRIVER_DLLESPEC
    void start();

    XCL_DRIVER_DLLESPEC
    ert_cmd_state wait(const std::chrono::milliseconds& timeout = std::chrono::milliseconds{0}) const;

    ert_cmd_state wait(unsigned int timeout_ms) const { return wait(timeout_ms * std::chrono::milliseconds{1}); }

    XCL_DRIVER_DLLESPEC
    ert_cmd_state state() const;

    explicit operator bool() const { return handle != nullptr; }

    template <typename ArgType>
    void set_arg(int index, ArgType&& arg) { set_arg_at_index(index, &arg, sizeof(arg)); }

    void set_arg(int index, xrt::bo& boh) { set_arg_at_index(index, boh); }
    void set_arg(int index, const xrt::bo& boh) { set_arg_at_index(index, boh); }
    void set_arg(int index, xrt::bo&& boh) { set_arg_at_index(index, boh); }

    template <typename... Args>
    void operator()(Args&&... args) {
        set_arg(0, std::forward<Args>(args)...);
        start();
    }

    void set_arg(int index, const void* value, size_t bytes) { set_arg_at_index(index, value, bytes); }

private:
    std::shared_ptr<run_impl> handle;

    XCL_DRIVER_DLLESPEC
    void set_arg_at_index(int index, const void* value, size_t bytes);

    XCL_DRIVER_DLLESPEC
    void set_arg_at_index(int index, const xrt::bo&);

    template <typename ArgType, typename... Args>
    void set_arg(int argno, ArgType&& arg, Args&&... args) {
        set_arg(argno, std::forward<ArgType>(arg));
        set_arg(++argno, std::forward<Args>(args)...);
    }
};

class kernel_impl;
class kernel {
public:
    enum class cu_access_mode : uint8_t { exclusive = 0, shared = 1, none = 2 };

    kernel() = default;

    XCL_DRIVER_DLLESPEC
    kernel(const xrt::device& device, const xrt::uuid& xclbin_id, const std::string& name,
           cu_access_mode mode = cu_access_mode::shared);

    kernel(const xrt::device& device, const xrt::uuid& xclbin_id, const std::string& name, bool ex)
        : kernel(device, xclbin_id, name, ex ? cu_access_mode::exclusive : cu_access_mode::shared) {}

    XCL_DRIVER_DLLESPEC
    kernel(xclDeviceHandle dhdl, const xrt::uuid& xclbin_id, const std::string& name,
           cu_access_mode mode = cu_access_mode::shared);

    template <typename... Args>
    run operator()(Args&&... args) {
        run r(*this);
        r(std::forward<Args>(args)...);
        return r;
    }

    XCL_DRIVER_DLLESPEC
    int group_id(int argno) const;

    XCL_DRIVER_DLLESPEC
    std::string get_name() const;

    const std::shared_ptr<kernel_impl>& get_handle() const { return handle; }

private:
    std::shared_ptr<kernel_impl> handle;
};

}  // namespace xrt

#endif

// XRT stub for tests: xrt::uuid (xrt/xrt_uuid.h, XRT 2022.2), opaque here.
#ifndef XRT_STUB_XRT_UUID_H_
#define XRT_STUB_XRT_UUID_H_

#include <string>

namespace xrt {

class uuid {
public:
    uuid();
    uuid(const uuid& rhs);
    uuid& operator=(const uuid& rhs);
    std::string to_string() const;

private:
    unsigned char m_uuid[16];
};

}  // namespace xrt

#endif

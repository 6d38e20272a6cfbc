// SPDX-License-Identifier: GPL-2.0

//! GEM objects. (Userptr objects come with the mirroring work; for now the driver only needs
//! the type the DRM core requires.)

use kernel::{drm::gem, drm::DeviceContext, prelude::*};

use crate::driver::{VgpuDevice, VgpuDriver};

/// Driver data of a GEM object.
#[pin_data]
pub(crate) struct VgpuObject {}

impl gem::DriverObject for VgpuObject {
    type Driver = VgpuDriver;
    type Args = ();

    fn new<Ctx: DeviceContext>(
        _dev: &VgpuDevice<Ctx>,
        _size: usize,
        _args: Self::Args,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(VgpuObject {})
    }
}

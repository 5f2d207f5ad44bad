//! Flushing f32 subnormals to zero while the f32 engine runs. GPUs flush them (Vulkan and WGSL
//! allow it, and drivers do), so the f32 CPU engine matching that is closer to the GPU; and x86
//! takes ~100x slower paths on subnormal operands, which SpecDef's 1/alpha-scaled quantities
//! produce in quantity (the defended attack step ran 3.4x faster flushed). The f64 reference
//! never flushes.

/// Sets FTZ and DAZ in MXCSR for this thread until dropped, then restores the old mode.
/// On other architectures it does nothing.
pub struct FlushSubnormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

#[cfg(target_arch = "x86_64")]
impl FlushSubnormals {
    /// MXCSR bit 15 (flush to zero) and bit 6 (denormals are zero).
    const FTZ_DAZ: u32 = 0x8040;

    pub fn enable() -> Self {
        let mut saved: u32 = 0;
        // SAFETY: stmxcsr stores the 4-byte control register to a valid u32; ldmxcsr loads a
        // value that differs from the current one only in the FTZ and DAZ mode bits.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack, preserves_flags));
            let flushed = saved | Self::FTZ_DAZ;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &flushed, options(nostack, preserves_flags));
        }
        Self { saved }
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for FlushSubnormals {
    fn drop(&mut self) {
        // SAFETY: restores the value read in `enable`.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved, options(nostack, preserves_flags));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl FlushSubnormals {
    pub fn enable() -> Self {
        Self {}
    }
}

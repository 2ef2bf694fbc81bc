import FarmKit
